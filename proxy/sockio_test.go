package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// tcpPair returns both ends of a real loopback TCP connection.
func tcpPair(t *testing.T) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.DialTCP("tcp4", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c, s
}

func TestSockIO_LargeWriteWaitsForRoomAndArrivesWhole(t *testing.T) {
	c, s := tcpPair(t)
	// More than the socket buffers hold: the writer must wait in the netpoller for the reader.
	want := bytes.Repeat([]byte("0123456789abcdef"), 1<<18)
	got := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(newSockIO(s))
		got <- b
	}()
	w := newSockIO(c)
	n, err := w.Write(want)
	if err != nil || n != len(want) {
		t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(want))
	}
	c.CloseWrite()
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatalf("read %d bytes, want the %d written", len(b), len(want))
	}
}

func TestSockIO_ReadHonoursDeadline(t *testing.T) {
	_, s := tcpPair(t)
	s.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, err := newSockIO(s).Read(make([]byte, 10))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past the deadline = %v, want os.ErrDeadlineExceeded", err)
	}
}

func TestSockIO_ReadAfterPeerCloseIsEOF(t *testing.T) {
	c, s := tcpPair(t)
	c.Close()
	if _, err := newSockIO(s).Read(make([]byte, 10)); err != io.EOF {
		t.Fatalf("Read after the peer closed = %v, want io.EOF", err)
	}
}

func TestSockIO_CloseUnblocksRead(t *testing.T) {
	_, s := tcpPair(t)
	done := make(chan error)
	go func() {
		_, err := newSockIO(s).Read(make([]byte, 10))
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	s.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read on a closed connection = %v, want net.ErrClosed", err)
	}
}

func TestSockIO_WriteToResetPeerFailsWithoutSignal(t *testing.T) {
	c, s := tcpPair(t)
	s.SetLinger(0)
	s.Close() // RST: writes on c fail with EPIPE or ECONNRESET, and must not raise SIGPIPE
	w := newSockIO(c)
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		_, err = w.Write([]byte("x"))
		time.Sleep(time.Millisecond)
	}
	if !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("Write to a reset peer = %v, want EPIPE or ECONNRESET", err)
	}
}
