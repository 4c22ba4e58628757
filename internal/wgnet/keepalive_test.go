package wgnet

import (
	"testing"
	"time"
)

// TestAcceptedConnGivesUpOnAVanishedPeer: a connection accepted on the
// overlay whose peer disappears without closing it (its device gone, as
// when a gateway's host loses power) fails after the keepalive probes go
// unanswered, instead of blocking its reader forever.
func TestAcceptedConnGivesUpOnAVanishedPeer(t *testing.T) {
	idle, ival, count := keepaliveIdle, keepaliveInterval, keepaliveCount
	keepaliveIdle, keepaliveInterval, keepaliveCount = time.Second, 300*time.Millisecond, 2
	t.Cleanup(func() { keepaliveIdle, keepaliveInterval, keepaliveCount = idle, ival, count })

	agent, gw := pair(t)
	l, err := agent.dev.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := dialTimeout(gw, l.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	accepted, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer accepted.Close()

	gw.dev.Close() // gone without a FIN or a RST
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		_, err := accepted.Read(make([]byte, 1))
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("read returned data from a vanished peer")
		}
		t.Logf("the accepted connection failed %v after its peer vanished: %v", time.Since(start).Round(time.Millisecond), err)
	case <-time.After(10 * time.Second):
		t.Fatal("the accepted connection still waits 10 s after its peer vanished")
	}
}
