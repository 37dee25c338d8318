package bpf

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
	"unsafe"
)

// The pinned maps outlive the binary that created them: a layout change makes a restarted agent
// refuse them (ErrMapIncompatible). These sizes change only on purpose.
func TestLayouts(t *testing.T) {
	sizes := map[string][2]uintptr{
		"ipcache_key":   {unsafe.Sizeof(datapathIpcacheKey{}), 24},
		"ipcache_value": {unsafe.Sizeof(datapathIpcacheValue{}), 8},
		"policy_key":    {unsafe.Sizeof(datapathPolicyKey{}), 8},
		"policy_value":  {unsafe.Sizeof(datapathPolicyValue{}), 24},
		"ct_key":        {unsafe.Sizeof(datapathCtKey{}), 40},
		"ct_value":      {unsafe.Sizeof(datapathCtValue{}), 48},
		"endpoint_info": {unsafe.Sizeof(datapathEndpointInfo{}), 24},
		"event":         {unsafe.Sizeof(datapathEvent{}), 80},
	}
	for name, s := range sizes {
		if s[0] != s[1] {
			t.Errorf("struct %s is %d bytes, want %d", name, s[0], s[1])
		}
	}
}

func encodeEvent(t testing.TB, ev datapathEvent) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := binary.Write(&buf, binary.NativeEndian, ev); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestParseEvent_DecodesRecord(t *testing.T) {
	raw := encodeEvent(t, datapathEvent{
		EndpointId: 7, SrcIdentity: 300, DstIdentity: 301,
		Saddr: addrWords(netip.MustParseAddr("10.0.0.1")), Daddr: addrWords(netip.MustParseAddr("10.0.0.2")),
		Sport: hostPort(40000), Dport: hostPort(80), Proto: ProtoTCP, Dir: uint8(Ingress),
		Verdict: uint8(VerdictDenied), Reason: uint8(ReasonDenyRule), Family: familyIPv4, Match: uint8(MatchIdentityPort),
		TcpFlags: 0x02, PktLen: 60,
	})
	ev, err := ParseEvent(raw)
	if err != nil {
		t.Fatal(err)
	}
	want := Event{
		Endpoint: 7, SrcIdentity: 300, DstIdentity: 301,
		Src: netip.MustParseAddrPort("10.0.0.1:40000"), Dst: netip.MustParseAddrPort("10.0.0.2:80"),
		Protocol: ProtoTCP, Direction: Ingress, Verdict: VerdictDenied, Reason: ReasonDenyRule,
		Match: MatchIdentityPort, TCPFlags: 0x02, Length: 60,
	}
	ev.Time = want.Time
	if ev != want {
		t.Fatalf("ParseEvent = %+v\nwant %+v", ev, want)
	}
	if s := ev.String(); s == "" || !bytes.Contains([]byte(s), []byte("deny rule")) {
		t.Errorf("String() = %q, want the reason named", s)
	}
}

func TestParseEvent_RejectsMalformed(t *testing.T) {
	good := encodeEvent(t, datapathEvent{Family: familyIPv4})
	cases := map[string][]byte{
		"empty":     nil,
		"truncated": good[:EventSize-1],
		"family":    encodeEvent(t, datapathEvent{Family: 9}),
		"direction": encodeEvent(t, datapathEvent{Family: familyIPv4, Dir: 5}),
	}
	for name, raw := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseEvent(raw); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func FuzzParseEvent(f *testing.F) {
	f.Add(encodeEvent(f, datapathEvent{Family: familyIPv4, Verdict: uint8(VerdictAllowed)}))
	f.Add([]byte{})
	f.Add(make([]byte, EventSize+3))
	f.Fuzz(func(t *testing.T, raw []byte) {
		ev, err := ParseEvent(raw)
		if err != nil {
			return
		}
		_ = ev.String()
		if ev.Direction > Egress || (ev.Src.Addr().IsValid() && !ev.Src.Addr().Is4()) {
			t.Fatalf("parsed an impossible event %+v", ev)
		}
	})
}
