// Package parsertest drives a parser.Conn the way the proxy does, for parser tests: data arrives
// in chunks of any size, the driver buffers, loops over the parser's ops and records what would
// be forwarded, injected and judged.
package parsertest

import (
	"fmt"
	"maps"

	"github.com/palisade-mesh/palisade/proxy/parser"
)

// Session is a parser.Session that allows requests by a function and records every judgement.
type Session struct {
	AllowFunc func(fields map[string]string) bool
	Judged    []Judgement
}

// Judgement is one request the parser asked about.
type Judgement struct {
	Fields  map[string]string
	Allowed bool
}

// Allow implements parser.Session.
func (s *Session) Allow(fields map[string]string) bool {
	ok := s.AllowFunc == nil || s.AllowFunc(fields)
	s.Judged = append(s.Judged, Judgement{Fields: maps.Clone(fields), Allowed: ok})
	return ok
}

// Direction is the driver of one direction of a connection.
type Direction struct {
	Conn  parser.Conn
	Reply bool

	buf       []byte
	skip      int // >0 bytes to pass, <0 to drop, without asking the parser
	Forwarded []byte
	Injected  []byte
	Err       error
}

// Feed delivers a chunk and runs the parser until it asks for more. It returns the parser's error
// once the parser has answered ERROR (and ignores everything after).
func (d *Direction) Feed(chunk []byte) error {
	if d.Err != nil {
		return d.Err
	}
	if d.skip != 0 {
		k := min(len(chunk), abs(d.skip))
		if d.skip > 0 {
			d.Forwarded = append(d.Forwarded, chunk[:k]...)
			d.skip -= k
		} else {
			d.skip += k
		}
		chunk = chunk[k:]
	}
	d.buf = append(d.buf, chunk...)
	if d.skip != 0 {
		return nil
	}
	for steps := 0; len(d.buf) > 0; steps++ {
		if steps > 1_000_000 {
			d.Err = fmt.Errorf("parser loops without consuming")
			return d.Err
		}
		op := d.Conn.OnData(d.Reply, d.buf)
		switch op.Verdict {
		case parser.More:
			if op.N <= 0 {
				d.Err = fmt.Errorf("MORE %d: must ask for at least one byte", op.N)
			}
			return d.Err
		case parser.Pass, parser.Drop:
			if op.N <= 0 {
				d.Err = fmt.Errorf("%s %d: must consume at least one byte", op.Verdict, op.N)
				return d.Err
			}
			k := min(op.N, len(d.buf))
			if op.Verdict == parser.Pass {
				d.Forwarded = append(d.Forwarded, d.buf[:k]...)
			}
			d.buf = d.buf[k:]
			if op.N > k {
				d.skip = op.N - k
				if op.Verdict == parser.Drop {
					d.skip = -d.skip
				}
				return nil
			}
		case parser.Inject:
			d.Injected = append(d.Injected, op.Inject...)
		case parser.Error:
			d.Err = fmt.Errorf("parser error: %w", op.Err)
			if op.Err == nil {
				d.Err = fmt.Errorf("parser error")
			}
			return d.Err
		default:
			d.Err = fmt.Errorf("unknown verdict %v", op.Verdict)
			return d.Err
		}
	}
	return nil
}

// FeedBytewise delivers data one byte at a time.
func (d *Direction) FeedBytewise(data []byte) error {
	for i := range data {
		if err := d.Feed(data[i : i+1]); err != nil {
			return err
		}
	}
	return nil
}

// Pending is how many bytes the driver holds that the parser has not consumed.
func (d *Direction) Pending() int { return len(d.buf) }

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}
