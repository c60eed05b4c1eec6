package frame

// The trailer is CRC-16/CCITT-FALSE: polynomial 0x1021, initial value
// 0xFFFF, no reflection, no final XOR; its check value (the CRC of
// "123456789") is 0x29B1. It detects every error of an odd number of bits
// and every burst of up to 16 bits, which covers what a serial or radio
// link on a bedside device does; it is a link check, not a defence against
// tampering (the mesh's mTLS is).
const crcPoly = 0x1021

var crcTable = func() (t [256]uint16) {
	for i := range t {
		c := uint16(i) << 8
		for range 8 {
			if c&0x8000 != 0 {
				c = c<<1 ^ crcPoly
			} else {
				c <<= 1
			}
		}
		t[i] = c
	}
	return t
}()

// crc16 returns the CRC-16/CCITT-FALSE of b.
func crc16(b []byte) uint16 {
	c := uint16(0xFFFF)
	for _, x := range b {
		c = c<<8 ^ crcTable[byte(c>>8)^x]
	}
	return c
}
