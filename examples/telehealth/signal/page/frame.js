// Vitals frames, encoder side only, for the page: the binary format of
// medmesh/examples/vitals/frame (docs/vitals-frames.md). A 24-byte
// header (magic "VF", version 1, type, priority, flags, payload length
// u16, sequence u64, device time as Unix nanoseconds i64, all big-endian),
// the payload, and a CRC-16/CCITT-FALSE trailer over header and payload.
// The Go tests decode what this writes with the Go package, so the two
// cannot drift apart unnoticed.
"use strict";

const vitalsFrame = (() => {
  const HEADER = 24, TRAILER = 2, VERSION = 1, MAX_PAYLOAD = 16 << 10;
  const TYPE_SPO2 = 0x02, PRIORITY_HIGH = 1;

  const table = new Uint16Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i << 8;
    for (let k = 0; k < 8; k++) c = (c & 0x8000) ? ((c << 1) ^ 0x1021) & 0xffff : (c << 1) & 0xffff;
    table[i] = c;
  }
  function crc16(bytes) {
    let c = 0xffff;
    for (const x of bytes) c = ((c << 8) & 0xffff) ^ table[(c >> 8) ^ x];
    return c;
  }

  // encode returns one frame; deviceTimeNs is a BigInt of Unix nanoseconds.
  function encode({ type, priority, flags = 0, seq, deviceTimeNs, payload }) {
    if (payload.length > MAX_PAYLOAD) throw new Error("vitals frame payload too long");
    const buf = new Uint8Array(HEADER + payload.length + TRAILER);
    const dv = new DataView(buf.buffer);
    buf[0] = 0x56; buf[1] = 0x46; buf[2] = VERSION;
    buf[3] = type; buf[4] = priority; buf[5] = flags;
    dv.setUint16(6, payload.length);
    dv.setBigUint64(8, BigInt(seq));
    dv.setBigInt64(16, deviceTimeNs);
    buf.set(payload, HEADER);
    dv.setUint16(HEADER + payload.length, crc16(buf.subarray(0, HEADER + payload.length)));
    return buf;
  }

  // nowNs is the device clock in Unix nanoseconds, with the sub-millisecond
  // part performance.now() gives.
  function nowNs() {
    const ms = performance.timeOrigin + performance.now();
    return BigInt(Math.floor(ms * 1000)) * 1000n;
  }

  return { encode, nowNs, TYPE_SPO2, PRIORITY_HIGH };
})();
