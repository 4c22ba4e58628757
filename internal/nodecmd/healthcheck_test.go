package nodecmd

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestHealthcheck(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			w.WriteHeader(http.StatusNoContent)
		default:
			http.Error(w, "not ready", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String() + "/"
	ln.Close()

	for _, tc := range []struct {
		name string
		args []string
		want int
	}{
		{"2xx is healthy", []string{srv.URL + "/ok"}, 0},
		{"503 is unhealthy", []string{srv.URL + "/readyz"}, 1},
		{"refused is unhealthy", []string{closed}, 1},
		{"no URL is a usage error", nil, 2},
		{"two URLs are a usage error", []string{srv.URL, srv.URL}, 2},
		{"https is refused", []string{"https://127.0.0.1/"}, 2},
		{"not a URL", []string{"127.0.0.1:7070"}, 2},
		{"help", []string{"--help"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := RunHealthcheck(context.Background(), tc.args, io.Discard); got != tc.want {
				t.Fatalf("healthcheck %v: got exit %d, want %d", tc.args, got, tc.want)
			}
		})
	}
}
