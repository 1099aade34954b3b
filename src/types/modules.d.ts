// crc-32 ships types for its main entry only; its crc32c entry has the same shape.
declare module 'crc-32/crc32c.js' {
  const CRC32C: {
    buf(data: Uint8Array, seed?: number): number;
    bstr(data: string, seed?: number): number;
    str(data: string, seed?: number): number;
    version: string;
  };
  export default CRC32C;
}
