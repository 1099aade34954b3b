export * from './block-device.js';
export * from './file-device.js';
export * from './memory-device.js';
export * from './faulty-device.js';
export * from './image-lock.js';
