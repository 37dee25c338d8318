package kvstore

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

// diagnoseTimeout bounds the extra time New spends finding out why no endpoint answered.
const diagnoseTimeout = time.Second

// diagnose explains why an endpoint does not answer gRPC, since gRPC itself only reports that the
// deadline passed: it dials the endpoint and, for TLS, does the handshake and waits briefly for the
// server's verdict on the client certificate. It returns nil when it finds nothing wrong.
func diagnose(ctx context.Context, endpoint string, tlsCfg *tls.Config) error {
	ctx, cancel := context.WithTimeout(ctx, diagnoseTimeout)
	defer cancel()
	network, addr, secure, err := endpointAddress(endpoint)
	if err != nil {
		return err
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)

	if !secure {
		// A plaintext HTTP/2 server answers the client preface with a SETTINGS frame (type 4 in the
		// fourth byte); a TLS server answers with an alert or an HTTP/1 error.
		if _, err := conn.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")); err != nil {
			return err
		}
		head := make([]byte, 9)
		n, err := conn.Read(head)
		switch {
		case n >= 4 && head[3] == 0x04:
			return nil
		case n > 0 && (head[0] == 0x15 || bytes.HasPrefix(head, []byte("HTTP/1"))):
			return errors.New("the server speaks TLS: use https:// (or unixs://) and TLS settings")
		case err != nil && !isTimeout(err):
			return fmt.Errorf("the server closed the connection without answering plaintext gRPC (%v): if it serves TLS, use https:// or unixs://", err)
		default:
			return errors.New("the server does not speak gRPC over HTTP/2")
		}
	}

	cfg := &tls.Config{}
	if tlsCfg != nil {
		cfg = tlsCfg.Clone()
	}
	if cfg.ServerName == "" {
		cfg.ServerName = serverName(endpoint, addr)
	}
	cfg.NextProtos = []string{"h2"}
	tconn := tls.Client(conn, cfg)
	if err := tconn.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("TLS handshake: %w", err)
	}
	// With TLS 1.3 the server checks the client certificate after the client's handshake is done:
	// its refusal comes as an alert on the first read.
	tconn.SetReadDeadline(time.Now().Add(diagnoseTimeout / 2))
	if _, err := tconn.Read(make([]byte, 1)); err != nil && !isTimeout(err) {
		return fmt.Errorf("TLS: the server refused the connection: %w", err)
	}
	return nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// endpointAddress turns an etcd endpoint URL into a dialable address, following clientv3's rules:
// unix://path is relative unless it has a third slash.
func endpointAddress(endpoint string) (network, addr string, secure bool, err error) {
	scheme, rest, ok := strings.Cut(endpoint, "://")
	if !ok {
		return "", "", false, fmt.Errorf("endpoint %q: want scheme://address with scheme http, https, unix or unixs", endpoint)
	}
	switch scheme {
	case "http", "https":
		host, _, _ := strings.Cut(rest, "/")
		if _, _, err := net.SplitHostPort(host); err != nil || host == "" {
			return "", "", false, fmt.Errorf("endpoint %q: want %s://host:port", endpoint, scheme)
		}
		return "tcp", host, scheme == "https", nil
	case "unix", "unixs":
		if rest == "" || rest == "/" {
			return "", "", false, fmt.Errorf("endpoint %q: want %s://socket-path", endpoint, scheme)
		}
		return "unix", rest, scheme == "unixs", nil
	default:
		return "", "", false, fmt.Errorf("endpoint %q: scheme %q is not one of http, https, unix, unixs", endpoint, scheme)
	}
}

// serverName is the name the certificate must carry, as clientv3 picks it: the host for TCP, the
// socket file name without its ":port" suffix for unix sockets.
func serverName(endpoint, addr string) string {
	if strings.HasPrefix(endpoint, "unix") {
		addr = addr[strings.LastIndexByte(addr, '/')+1:]
	}
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return addr
}
