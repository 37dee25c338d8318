package proxy

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// sockIO reads and writes a connection's nonblocking socket with raw system calls, waiting for
// readiness in the netpoller (so the connection's deadlines and Close still apply).
//
// net.Conn's Read and Write tell the Go scheduler that the thread may block. When such a call
// outlasts a sysmon tick (20µs: a loopback TCP write runs the receiver's network stack inline, and
// on a busy node it often takes that long) and other goroutines wait, the runtime hands the P to
// another thread: a futex wake-up and a context switch, per request and per direction, and sysmon
// keeps polling every 20µs instead of backing off. A call on a nonblocking socket never blocks: it
// is CPU work the thread does anyway, so the proxy's hot path keeps its P while the kernel works.
// Profiles of the agent under the proxy benchmark showed sysmon and those handoffs as a quarter of
// the agent's CPU.
//
// Reads and writes may run concurrently (one reader, one writer); each direction has its own
// state, and the callbacks are bound once so a call allocates nothing.
type sockIO struct {
	conn net.Conn
	rc   syscall.RawConn // nil: not a socket, conn's own Read and Write are used

	rd, wr         rawOp
	readFn, sendFn func(fd uintptr) bool
}

// rawOp is the state of one direction's call in progress.
type rawOp struct {
	p     []byte
	n     int
	errno syscall.Errno
}

func newSockIO(c net.Conn) *sockIO {
	s := &sockIO{conn: c}
	if sc, ok := c.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			s.rc = rc
			s.readFn, s.sendFn = s.rd.read, s.wr.send
		}
	}
	return s
}

func (s *sockIO) Read(p []byte) (int, error) {
	if s.rc == nil {
		return s.conn.Read(p)
	}
	if len(p) == 0 {
		return 0, nil
	}
	s.rd = rawOp{p: p}
	err := s.rc.Read(s.readFn)
	n, errno := s.rd.n, s.rd.errno
	s.rd.p = nil
	switch {
	case err != nil:
		return 0, err // deadline or closed, as net.Conn reports them
	case errno != 0:
		return 0, os.NewSyscallError("read", errno)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (s *sockIO) Write(p []byte) (int, error) {
	if s.rc == nil {
		return s.conn.Write(p)
	}
	if len(p) == 0 {
		return 0, nil
	}
	s.wr = rawOp{p: p}
	err := s.rc.Write(s.sendFn)
	n, errno := s.wr.n, s.wr.errno
	s.wr.p = nil
	switch {
	case err != nil:
		return n, err
	case errno != 0:
		return n, os.NewSyscallError("write", errno)
	}
	return n, nil
}

// read is one read(2); false asks the netpoller to wait for readiness and call again.
func (o *rawOp) read(fd uintptr) bool {
	for {
		r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&o.p[0])), uintptr(len(o.p)))
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		o.n, o.errno = int(r), e
		return true
	}
}

// send writes all of o.p with send(2) and MSG_NOSIGNAL (a peer that closed gets EPIPE, never a
// SIGPIPE); false asks the netpoller to wait for room in the socket buffer and call again.
func (o *rawOp) send(fd uintptr) bool {
	for o.n < len(o.p) {
		r, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&o.p[o.n])), uintptr(len(o.p)-o.n),
			syscall.MSG_NOSIGNAL, 0, 0)
		switch e {
		case 0:
			o.n += int(r)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			o.errno = e
			return true
		}
	}
	return true
}
