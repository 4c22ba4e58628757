package wgnet

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/internal/leakcheck"
)

// TestCloseReleasesEverything: closing a device ends blocked Accepts and
// Reads on its netstack, makes every method fail with net.ErrClosed, and
// leaves no goroutine behind.
func TestCloseReleasesEverything(t *testing.T) {
	leakcheck.Goroutines(t)
	agent, gw := pair(t)
	l, err := agent.dev.Listen("tcp", ":7000")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 1)
	acceptErr := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			acceptErr <- err
			return
		}
		accepted <- c
		_, err = l.Accept() // blocks until the device closes
		acceptErr <- err
	}()
	c, err := dialTimeout(gw, hostPort(agent.addr, 7000), 5*time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	var server net.Conn
	select {
	case server = <-accepted:
		defer server.Close()
	case err := <-acceptErr:
		t.Fatalf("accept: %v", err)
	}
	readErr := make(chan error, 1)
	go func() {
		_, err := server.Read(make([]byte, 1)) // blocks until the device closes
		readErr <- err
	}()

	if err := agent.dev.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for name, ch := range map[string]chan error{"Accept": acceptErr, "Read": readErr} {
		select {
		case err := <-ch:
			if err == nil {
				t.Errorf("%s after Close: got nil error, want one", name)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s after Close: still blocked after 5s", name)
		}
	}
	if err := agent.dev.Close(); err != nil {
		t.Errorf("second Close: got %v, want nil", err)
	}

	_, err = agent.dev.SetPeers(nil)
	checkClosed(t, "SetPeers", err)
	_, err = agent.dev.Peers()
	checkClosed(t, "Peers", err)
	_, err = agent.dev.DialContext(context.Background(), "tcp", hostPort(gw.addr, 80))
	checkClosed(t, "DialContext", err)
	_, err = agent.dev.Listen("tcp", ":80")
	checkClosed(t, "Listen", err)
}

func checkClosed(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, net.ErrClosed) {
		t.Errorf("%s after Close: got %v, want %v", what, err, net.ErrClosed)
	}
}
