package bpf

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// RegisterProxySocket makes the listener the target of flows admitted with proxyPort. The
// listener must live in the namespace of the endpoints whose flows it takes (create it there), be
// TCP and not MPTCP (net.ListenConfig.SetMultipathTCP(false)): the kernel refuses MPTCP sockets in
// a SOCKHASH. The kernel drops the entry when the socket closes; a restarted proxy registers again.
func (d *Datapath) RegisterProxySocket(proxyPort uint16, listener syscall.Conn) error {
	if proxyPort == 0 {
		return errors.New("register proxy socket: proxy port must not be 0")
	}
	raw, err := listener.SyscallConn()
	if err != nil {
		return fmt.Errorf("register proxy socket for port %d: %w", proxyPort, err)
	}
	var putErr error
	err = raw.Control(func(fd uintptr) {
		if putErr = checkListener(int(fd)); putErr == nil {
			putErr = d.objs.PalProxySocks.Put(uint32(proxyPort), uint64(fd))
		}
	})
	if err == nil {
		err = putErr
	}
	if err != nil {
		return fmt.Errorf("register proxy socket for port %d: %w", proxyPort, err)
	}
	return nil
}

// checkListener accepts listening plain-TCP sockets only: anything else would be assigned to TCP
// flows and fail there, or (MPTCP) be refused by the kernel with a less helpful error.
func checkListener(fd int) error {
	proto, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL)
	if err != nil {
		return fmt.Errorf("read socket protocol: %w", err)
	}
	if proto != unix.IPPROTO_TCP {
		return fmt.Errorf("socket protocol %d is not TCP (MPTCP listeners need ListenConfig.SetMultipathTCP(false))", proto)
	}
	listening, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	if err != nil {
		return fmt.Errorf("read socket state: %w", err)
	}
	if listening != 1 {
		return errors.New("socket is not listening")
	}
	return nil
}

// UnregisterProxySocket removes the listener of proxyPort; its flows are then refused.
func (d *Datapath) UnregisterProxySocket(proxyPort uint16) error {
	if err := d.objs.PalProxySocks.Delete(uint32(proxyPort)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("unregister proxy socket for port %d: %w", proxyPort, err)
	}
	return nil
}
