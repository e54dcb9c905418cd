export { IoBus, type Device, type BusRun, type BusRunOptions, type BusRunAsyncOptions } from './bus';
export { Serial16550, COM1_PORT, type SerialOptions } from './serial';
