package middleware

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"medmesh/sidecar/audit/audittest"
	"medmesh/sidecar/classify"
	"medmesh/sidecar/phi"
)

// svid makes a self-signed X.509-SVID (URI SAN only) for id.
func svid(t *testing.T, id string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(id)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{}, URIs: []*url.URL{u},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestCallerIdentityCapsPriority: the caller's SPIFFE ID comes from its
// verified client certificate and caps the priority it can claim.
func TestCallerIdentityCapsPriority(t *testing.T) {
	const monitor = "spiffe://medmesh.local/ns/icu/svc/monitor"
	const billing = "spiffe://medmesh.local/ns/default/svc/billing"
	rules := phi.NewRules()
	rules.Set(&classify.Config{Callers: classify.CallerPolicy{Default: classify.Low,
		Entries: []classify.CallerEntry{{ID: monitor, Max: classify.Critical}}}})
	aud := &audittest.Recorder{}
	e := phi.New(phi.Options{Rules: rules, Audit: aud, Service: "vitals"})
	got := make(chan string, 1)
	srv := httptest.NewUnstartedServer(HTTP(e, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("X-Medmesh-Priority")
	})))
	pool := x509.NewCertPool()
	certs := map[string]tls.Certificate{monitor: svid(t, monitor), billing: svid(t, billing)}
	for _, c := range certs {
		leaf, _ := x509.ParseCertificate(c.Certificate[0])
		pool.AddCert(leaf)
	}
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	srv.StartTLS()
	defer srv.Close()
	for id, want := range map[string]string{monitor: "critical", billing: "low"} {
		tr := srv.Client().Transport.(*http.Transport).Clone()
		tr.TLSClientConfig.Certificates = []tls.Certificate{certs[id]}
		resp, err := (&http.Client{Transport: tr}).Post(srv.URL+"/vitals/alerts/cardiac_arrest_alert", "application/json", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if p := <-got; p != want {
			t.Errorf("caller %s: priority %q, want %q", id, p, want)
		}
	}
	if events := aud.All(); len(events) != 2 || events[0].Source == "" || events[1].Source == "" {
		t.Errorf("audit sources: %+v", events)
	}
}
