// Reads the server's CRL1 container: "CRL1", uint32 header length, JSON header, then columns
// aligned to 8 bytes that are viewed in place as typed arrays (no copy).

const TYPES = {
  uint8: Uint8Array, uint16: Uint16Array, uint32: Uint32Array, int32: Int32Array, float32: Float32Array,
};

export function parseContainer(buffer) {
  const bytes = new Uint8Array(buffer, 0, 8);
  const magic = String.fromCharCode(bytes[0], bytes[1], bytes[2], bytes[3]);
  if (magic !== 'CRL1') throw new Error('not a Corral map buffer');
  const n = new DataView(buffer).getUint32(4, true);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 8, n)));
  const start = 8 + n;
  const cols = {};
  for (const c of header.columns) {
    const T = TYPES[c.dtype];
    if (!T) throw new Error(`unknown column type ${c.dtype}`);
    cols[c.name] = new T(buffer, start + c.offset, c.length);
  }
  return { header, cols };
}
