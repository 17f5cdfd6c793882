// Short-lived I/O buffers of a few KiB (a 4 KiB READ's data, a WRITE's data-out) carved out of
// larger slabs, the way Buffer.allocUnsafe pools buffers below 4 KiB: one native allocation per slab
// instead of one per buffer, and far less for the garbage collector to track and free. A slab is
// freed once no view into it is left, so only buffers that die young belong here.

const SLAB_BYTES = 512 * 1024;
/** Larger buffers get their own allocation (a slab would be used up by a handful of them). */
const MAX_SLAB_ALLOCATION = 64 * 1024;

let slab: ArrayBuffer = new ArrayBuffer(0);
let used = 0;

/** An uninitialised buffer of `size` bytes, like Buffer.allocUnsafe. */
export function allocIoBuffer(size: number): Buffer {
  if (size > MAX_SLAB_ALLOCATION) return Buffer.allocUnsafe(size);
  if (used + size > slab.byteLength) {
    // allocUnsafeSlow: not zero-filled, and not itself part of Node's small-buffer pool.
    slab = Buffer.allocUnsafeSlow(SLAB_BYTES).buffer as ArrayBuffer;
    used = 0;
  }
  const buf = Buffer.from(slab, used, size);
  // 8-byte aligned starts, as the typed-array views of a buffer may want.
  used += (size + 7) & ~7;
  return buf;
}
