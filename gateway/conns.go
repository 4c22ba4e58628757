package gateway

import (
	"bufio"
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// connSet tracks live connections that no http.Server waits for (raw TCP
// relays, hijacked WebSocket connections), so that shutdown can wait for
// them to finish and then close the rest.
type connSet struct {
	// mu guards conns and empty.
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	// empty is closed when conns becomes empty after a remove; replaced on
	// the next add.
	empty chan struct{}
}

func newConnSet() *connSet {
	ch := make(chan struct{})
	close(ch)
	return &connSet{conns: map[net.Conn]struct{}{}, empty: ch}
}

func (s *connSet) add(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.conns) == 0 {
		s.empty = make(chan struct{})
	}
	s.conns[c] = struct{}{}
}

func (s *connSet) remove(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.conns[c]; !ok {
		return
	}
	delete(s.conns, c)
	if len(s.conns) == 0 {
		close(s.empty)
	}
}

func (s *connSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// wait returns when the set is empty or ctx ends.
func (s *connSet) wait(ctx context.Context) {
	s.mu.Lock()
	empty := s.empty
	s.mu.Unlock()
	select {
	case <-empty:
	case <-ctx.Done():
	}
}

// closeAll closes every connection in the set; their owners remove them.
func (s *connSet) closeAll() {
	s.mu.Lock()
	conns := make([]net.Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// agentConn is a stream to an agent after its answer to the preamble: reads
// go through the reader that read the answer, so bytes the agent sent right
// after it (a server that speaks first) are not lost.
type agentConn struct {
	net.Conn
	r *bufio.Reader
	// open counts the gateway's open streams; decremented once on Close.
	open      *atomic.Int64
	closeOnce sync.Once
}

func (c *agentConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// Close closes the stream.
func (c *agentConn) Close() error {
	c.closeOnce.Do(func() {
		if c.open != nil {
			c.open.Add(-1)
		}
	})
	return c.Conn.Close()
}

// CloseWrite half-closes the stream, so a raw TCP relay can pass an EOF on
// while the other direction keeps flowing.
func (c *agentConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// relayBufferSize is the copy buffer of a raw TCP relay, one per direction.
const relayBufferSize = 64 << 10

// relay copies bytes both ways between a and b until both directions have
// ended, passing each EOF on as a half-close. An error in one direction
// closes both connections, so the other direction cannot hang. It closes
// both before returning.
func relay(a, b net.Conn) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		pipe(b, a)
	}()
	pipe(a, b)
	<-done
	a.Close()
	b.Close()
}

// pipe copies from src to dst, then half-closes dst; on an error it closes
// both.
func pipe(dst, src net.Conn) {
	buf := make([]byte, relayBufferSize)
	_, err := io.CopyBuffer(dst, src, buf)
	if err != nil {
		dst.Close()
		src.Close()
		return
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		if cw.CloseWrite() == nil {
			return
		}
	}
	dst.Close()
}
