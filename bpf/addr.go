package bpf

import (
	"encoding/binary"
	"net/netip"
)

const (
	familyIPv4 = 4
	familyIPv6 = 6
)

// addrWords lays an IPv4 address out as the datapath stores it: network byte order in word 0.
func addrWords(a netip.Addr) [4]uint32 {
	b := a.As4()
	return [4]uint32{binary.NativeEndian.Uint32(b[:])}
}

func wordsAddr(w [4]uint32) netip.Addr {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], w[0])
	return netip.AddrFrom4(b)
}

// hostPort converts a port as stored in network byte order to host order.
func hostPort(p uint16) uint16 {
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], p)
	return binary.BigEndian.Uint16(b[:])
}
