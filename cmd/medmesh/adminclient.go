package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"medmesh/certs"
)

// adminClientFlags are the credentials a command presents to the admin
// API (package adminauth): a client certificate from medmesh's CA over
// HTTPS, a Kubernetes bearer token, or nothing (a --dev control plane on
// loopback).
type adminClientFlags struct{ certDir, tokenFile, caFile string }

func (f *adminClientFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.certDir, "cert-dir", "", "client certificate for the admin TLS port: a directory made by \"medmesh ca admin-cert\" (svid.pem, svid_key.pem, bundle.pem); implies https")
	fs.StringVar(&f.tokenFile, "token-file", "", "send the bearer token in this file (a Kubernetes token, e.g. from \"kubectl create token\"); re-read at each call")
	fs.StringVar(&f.caFile, "ca-file", "", "CA bundle (PEM) the admin TLS port's certificate must chain to, when --cert-dir is not given; implies https")
}

// client returns an HTTP client presenting the credentials, and the base
// URL for addr ("host:port" or a URL).
func (f *adminClientFlags) client(addr string, timeout time.Duration) (*http.Client, string, error) {
	base := addr
	if !strings.Contains(base, "://") {
		scheme := "http://"
		if f.certDir != "" || f.caFile != "" {
			scheme = "https://"
		}
		base = scheme + base
	}
	base = strings.TrimSuffix(base, "/")
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if strings.HasPrefix(base, "https://") {
		cfg, err := f.tlsConfig()
		if err != nil {
			return nil, "", err
		}
		tr.TLSClientConfig = cfg
	}
	var rt http.RoundTripper = tr
	if f.tokenFile != "" {
		tok, err := readToken(f.tokenFile)
		if err != nil {
			return nil, "", err
		}
		rt = &bearer{file: f.tokenFile, last: tok, next: tr}
	}
	return &http.Client{Timeout: timeout, Transport: rt}, base, nil
}

func (f *adminClientFlags) tlsConfig() (*tls.Config, error) {
	bundle := f.caFile
	if bundle == "" && f.certDir != "" {
		bundle = filepath.Join(f.certDir, certs.SVIDBundleFile)
	}
	if bundle == "" {
		return nil, errors.New("https needs the CA bundle the admin port's certificate chains to: give --cert-dir or --ca-file")
	}
	pem, err := os.ReadFile(bundle)
	if err != nil {
		return nil, fmt.Errorf("CA bundle: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA bundle %s: no PEM certificate in it", bundle)
	}
	if f.certDir == "" {
		return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots}, nil
	}
	svid, err := x509svid.Load(filepath.Join(f.certDir, certs.SVIDCertFile), filepath.Join(f.certDir, certs.SVIDKeyFile))
	if err != nil {
		return nil, fmt.Errorf("--cert-dir %s: %w", f.certDir, err)
	}
	// The server is verified as a web server (by the name dialled), the
	// client by its SPIFFE ID: what adminauth.ServerTLS expects.
	return tlsconfig.MTLSWebClientConfig(svid, roots), nil
}

// bearer adds the token, read afresh each time (projected tokens rotate);
// a file that reads only once (a pipe, <(kubectl create token ...)) keeps
// its first token.
type bearer struct {
	file string
	next http.RoundTripper

	mu   sync.Mutex
	last string
}

func (b *bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	b.mu.Lock()
	if tok, err := readToken(b.file); err == nil {
		b.last = tok
	}
	tok := b.last
	b.mu.Unlock()
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+tok)
	return b.next.RoundTrip(r)
}

func readToken(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("--token-file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("--token-file %s is empty", file)
	}
	return tok, nil
}
