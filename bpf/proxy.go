package bpf

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/cilium/ebpf"
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
		putErr = d.objs.PalProxySocks.Put(uint32(proxyPort), uint64(fd))
	})
	if err == nil {
		err = putErr
	}
	if err != nil {
		return fmt.Errorf("register proxy socket for port %d: %w", proxyPort, err)
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
