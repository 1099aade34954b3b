// Minimal typings for the parts of buffer-layout (which ships none) that tsbtrfs uses.
declare module 'buffer-layout' {
  export class Layout<T = any> {
    constructor(span: number, property?: string);
    span: number;
    property?: string;
    decode(b: Buffer, offset?: number): T;
    encode(src: T, b: Buffer, offset?: number): number;
    getSpan(b?: Buffer, offset?: number): number;
    replicate(property: string): Layout<T>;
  }
  export class Structure<T = any> extends Layout<T> {
    fields: Layout[];
  }
  export function struct<T = any>(fields: Layout[], property?: string, decodePrefixes?: boolean): Structure<T>;
  export function u8(property?: string): Layout<number>;
  export function u16(property?: string): Layout<number>;
  export function u32(property?: string): Layout<number>;
  export function s32(property?: string): Layout<number>;
  export function blob(length: number, property?: string): Layout<Buffer>;
  export function seq<T>(elementLayout: Layout<T>, count: number, property?: string): Layout<T[]>;
  const _default: {
    Layout: typeof Layout;
    struct: typeof struct;
    u8: typeof u8; u16: typeof u16; u32: typeof u32; s32: typeof s32;
    blob: typeof blob; seq: typeof seq;
  };
  export default _default;
}
