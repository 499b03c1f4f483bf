// A Go mTLS webhook endpoint that trusts the client certificates listed in a PEM file (ca.crt, as
// trust-sync or the kubelet writes it) and picks up every change of that file without a restart.
//
//	goserver -listen 127.0.0.1:0 -cert server.crt -key server.key -trust /etc/webhook-trust/ca.crt
//
// net/http with tls.RequireAndVerifyClientCert: a client without a certificate, or with one that no
// certificate of the file vouches for, is refused during the handshake. A watcher polls the file every
// 100 ms (the target of its directory's ..data link, and the inode, size and mtime of the file it
// resolves to: the kubelet's swap never touches ca.crt itself) and builds a new tls.Config;
// GetConfigForClient hands the newest one to every new handshake. An unusable file (no certificate)
// keeps the previous trust and logs trust_reload_failed.
//
// Session tickets are off: a resumed session skips client-certificate verification, and Go keeps
// one set of ticket keys across the configs GetConfigForClient returns. Without tickets (Go keeps
// no server-side session cache) every connection is verified against the trust as it is then.
// A keep-alive connection whose certificate is no longer listed is answered 421 and closed, so a
// revoked client cannot go on over a connection opened before the change.
//
// One JSON line per event on stdout: listening, trust_loaded, trust_reload_failed, delivery,
// handshake_failed. Only the Go standard library.
package main

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

var out = struct {
	sync.Mutex
	enc *json.Encoder
}{enc: json.NewEncoder(os.Stdout)}

func emit(record map[string]any) {
	out.Lock()
	defer out.Unlock()
	_ = out.enc.Encode(record)
}

// generation is one version of the trust file: the config new handshakes get, and what it lists.
type generation struct {
	number       int
	config       *tls.Config
	fingerprints map[string]bool
}

type server struct {
	certFile, keyFile, trustFile string
	current                      atomic.Pointer[generation]
}

func fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// identity tells versions of the trust file apart: the ..data link's target (the kubelet's and
// trust-sync's swap) and the inode, size and mtime of the file the path resolves to (an edit in place).
func (s *server) identity() string {
	link, _ := os.Readlink(filepath.Join(filepath.Dir(s.trustFile), "..data"))
	info, err := os.Stat(s.trustFile)
	if err != nil {
		return "missing:" + link
	}
	st, _ := info.Sys().(*syscall.Stat_t)
	var inode uint64
	if st != nil {
		inode = st.Ino
	}
	return fmt.Sprintf("%s|%d|%d|%d", link, inode, info.Size(), info.ModTime().UnixNano())
}

func (s *server) build(number int) (*generation, error) {
	data, err := os.ReadFile(s.trustFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	fingerprints := map[string]bool{}
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("a certificate of the trust file does not parse: %w", err)
		}
		pool.AddCert(cert)
		fingerprints[fingerprint(cert.Raw)] = true
	}
	if len(fingerprints) == 0 {
		return nil, errors.New("the trust file holds no PEM certificate")
	}
	pair, err := tls.LoadX509KeyPair(s.certFile, s.keyFile)
	if err != nil {
		return nil, fmt.Errorf("the serving certificate: %w", err)
	}
	config := &tls.Config{
		Certificates:           []tls.Certificate{pair},
		ClientAuth:             tls.RequireAndVerifyClientCert,
		ClientCAs:              pool,
		MinVersion:             tls.VersionTLS12,
		SessionTicketsDisabled: true,
	}
	return &generation{number: number, config: config, fingerprints: fingerprints}, nil
}

func (s *server) reload(number int) bool {
	gen, err := s.build(number)
	if err != nil {
		emit(map[string]any{"event": "trust_reload_failed", "error": err.Error(), "action": "keeping the previous trust"})
		return false
	}
	s.current.Store(gen)
	listed := make([]string, 0, len(gen.fingerprints))
	for fp := range gen.fingerprints {
		listed = append(listed, fp)
	}
	emit(map[string]any{"event": "trust_loaded", "generation": number, "fingerprints": listed})
	return true
}

func (s *server) watch() {
	seen := s.identity()
	number := 1
	for range time.Tick(100 * time.Millisecond) {
		now := s.identity()
		if now == seen {
			continue
		}
		seen = now
		number++
		s.reload(number)
	}
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	peer := ""
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		peer = fingerprint(r.TLS.PeerCertificates[0].Raw)
	}
	gen := s.current.Load()
	status := http.StatusOK
	switch {
	case !gen.fingerprints[peer] && !verifies(gen, r.TLS):
		// Verified under an older trust file that listed it; this one does not: reconnect.
		status = http.StatusMisdirectedRequest
		w.Header().Set("Connection", "close")
	case r.Method != http.MethodPost:
		status = http.StatusMethodNotAllowed
	default:
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20+1))
		if err != nil || len(body) == 0 || len(body) > 1<<20 || !json.Valid(body) {
			status = http.StatusBadRequest
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(fmt.Sprintf("{\"status\": %d}\n", status)))
	emit(map[string]any{
		"event": "delivery", "status": status, "method": r.Method, "path": r.URL.Path,
		"client_fingerprint": peer, "trust_generation": gen.number,
	})
}

// verifies: whether the connection's client certificate chains to the current trust (a client
// certificate issued by a listed CA rather than listed itself).
func verifies(gen *generation, state *tls.ConnectionState) bool {
	if state == nil || len(state.PeerCertificates) == 0 {
		return false
	}
	intermediates := x509.NewCertPool()
	for _, c := range state.PeerCertificates[1:] {
		intermediates.AddCert(c)
	}
	_, err := state.PeerCertificates[0].Verify(x509.VerifyOptions{
		Roots: gen.config.ClientCAs, Intermediates: intermediates,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	return err == nil
}

// handshakeLog turns net/http's "http: TLS handshake error from ...: reason" lines into JSON records.
type handshakeLog struct{}

func (handshakeLog) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	if _, reason, ok := strings.Cut(line, "TLS handshake error from "); ok {
		peer, detail, _ := strings.Cut(reason, ": ")
		emit(map[string]any{"event": "handshake_failed", "peer": peer, "reason": detail})
	} else {
		emit(map[string]any{"event": "server_error", "message": line})
	}
	return len(p), nil
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on (port 0: any free port)")
	s := &server{}
	flag.StringVar(&s.certFile, "cert", "", "serving certificate (PEM)")
	flag.StringVar(&s.keyFile, "key", "", "serving key (PEM)")
	flag.StringVar(&s.trustFile, "trust", "", "trusted client certificates (PEM bundle, e.g. <dir>/ca.crt)")
	flag.Parse()
	if s.certFile == "" || s.keyFile == "" || s.trustFile == "" {
		flag.Usage()
		os.Exit(2)
	}
	if !s.reload(1) {
		os.Exit(1)
	}
	go s.watch()
	listener, err := net.Listen("tcp", *listen)
	if err != nil {
		emit(map[string]any{"event": "listen_failed", "error": err.Error()})
		os.Exit(1)
	}
	base := &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return s.current.Load().config, nil
		},
	}
	httpServer := &http.Server{
		Handler:           s,
		TLSConfig:         base,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       60 * time.Second,
		ErrorLog:          log.New(handshakeLog{}, "", 0),
	}
	emit(map[string]any{"event": "listening", "address": listener.Addr().String()})
	go func() {
		stop := make(chan os.Signal, 1)
		signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
		<-stop
		_ = httpServer.Close()
	}()
	if err := httpServer.ServeTLS(listener, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
		emit(map[string]any{"event": "serve_failed", "error": err.Error()})
		os.Exit(1)
	}
}
