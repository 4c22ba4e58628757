// Command benchsrv is the application and the reverse-proxy baseline of the
// benchmark suite (internal/e2e, BenchmarkSuite; hack/bench.sh):
//
//	benchsrv app -listen 127.0.0.1:8080
//	benchsrv proxy -listen 127.0.0.1:8443 -target http://127.0.0.1:8080
//	benchsrv udpecho -listen 127.0.0.1:8081
//
// The app answers GET /bytes?n=N with N bytes, POST /upload with the
// count of bytes it read, and GET /healthz with a three-byte body; the bulk body is copied from a precomputed buffer so the
// app costs as little CPU as possible and the paths in front of it are what
// is measured. The proxy is a plain httputil.ReverseProxy terminating TLS
// with a self-signed ECDSA P-256 certificate (the kind a gateway makes when
// it has no other), with a keep-alive pool sized for hundreds of
// concurrent requests: the HTTPS baseline without a tunnel. Udpecho sends
// every UDP datagram back to where it came from: the suite times round trips
// to it, what one more process on a path costs on the machine at the least.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strconv"
	"time"
)

// maxBytes caps /bytes so a typo cannot stream forever.
const maxBytes = 64 << 30

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: benchsrv app|proxy|udpecho [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on")
	target := fs.String("target", "", "proxy: URL of the app")
	fs.Parse(os.Args[2:])
	var err error
	switch os.Args[1] {
	case "app":
		err = serveApp(*listen)
	case "proxy":
		err = serveProxy(*listen, *target)
	case "udpecho":
		var pc net.PacketConn
		if pc, err = net.ListenPacket("udp", *listen); err == nil {
			log.Printf("listening on %s", pc.LocalAddr())
			err = echoUDP(pc)
		}
	default:
		err = fmt.Errorf("unknown command %q: use app, proxy or udpecho", os.Args[1])
	}
	if err != nil {
		log.Fatal(err)
	}
}

// echoUDP sends every datagram pc receives back to its sender, until pc
// is closed.
func echoUDP(pc net.PacketConn) error {
	buf := make([]byte, 64<<10)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		// A send that fails (the sender gone) loses one datagram, as UDP
		// may; the sender times out and counts it.
		pc.WriteTo(buf[:n], from)
	}
}

func serveApp(listen string) error { return serve(listen, appHandler(), nil) }

// appHandler serves /healthz, /bytes?n= and /upload.
func appHandler() http.Handler {
	// 251 is prime: the pattern (0..250 repeated) shows a shifted or
	// dropped byte, and the buffer holds whole periods so that copies of
	// it join seamlessly.
	buf := make([]byte, 251*4096)
	for i := range buf {
		buf[i] = byte(i % 251)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("POST /upload", func(w http.ResponseWriter, r *http.Request) {
		// A large read buffer, so the app's reads cost few system calls.
		n, err := io.CopyBuffer(struct{ io.Writer }{io.Discard}, r.Body, make([]byte, 256<<10))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%d\n", n)
	})
	mux.HandleFunc("GET /bytes", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		if err != nil || n < 0 || n > maxBytes {
			http.Error(w, fmt.Sprintf("n: got %q, want a byte count up to 64 GiB", r.URL.Query().Get("n")), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		for n > 0 {
			k := min(n, int64(len(buf)))
			if _, err := w.Write(buf[:k]); err != nil {
				return
			}
			n -= k
		}
	})
	return mux
}

func serveProxy(listen, target string) error {
	u, err := url.Parse(target)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return fmt.Errorf("-target: got %q, want an http:// URL of the app", target)
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(u)
			r.SetXForwarded()
		},
		Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        1024,
			MaxIdleConnsPerHost: 256,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		},
	}
	cert, err := selfSigned()
	if err != nil {
		return err
	}
	return serve(listen, rp, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}})
}

func serve(listen string, h http.Handler, tc *tls.Config) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	log.Printf("listening on %s", ln.Addr())
	// No write timeout: a bulk download of many GiB is one response.
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, TLSConfig: tc}
	if tc != nil {
		err = srv.ServeTLS(ln, "", "")
	} else {
		err = srv.Serve(ln)
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "benchsrv"},
		DNSNames:     []string{"proxy.bench.example.com"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
