package integration

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/hashicorp/consul/api"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"medmesh/api/wire"
	"medmesh/certs"
	"medmesh/controlplane"
	"medmesh/controlplane/bootstrap"
	"medmesh/examples/clinical"
	"medmesh/internal/simproxy"
)

// callerRecorder is a clinical server that records the SPIFFE ID of every
// caller from its verified client certificate.
type callerRecorder struct {
	mu  sync.Mutex
	ids []string
}

func (r *callerRecorder) server(instance string) *clinical.Server {
	return &clinical.Server{Instance: instance, Handle: func(ctx context.Context, _ string) error {
		p, _ := peer.FromContext(ctx)
		tlsInfo, ok := p.AuthInfo.(credentials.TLSInfo)
		if !ok || len(tlsInfo.State.PeerCertificates) == 0 {
			return fmt.Errorf("call without a client certificate (auth %T)", p.AuthInfo)
		}
		id, err := x509svid.IDFromCert(tlsInfo.State.PeerCertificates[0])
		if err != nil {
			return err
		}
		r.mu.Lock()
		r.ids = append(r.ids, id.String())
		r.mu.Unlock()
		return nil
	}}
}

// last is the latest caller's SPIFFE ID.
func (r *callerRecorder) last() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.ids) == 0 {
		return ""
	}
	return r.ids[len(r.ids)-1]
}

// TestProxylessMTLS: with xDS credentials on both sides a call completes
// over mTLS and the server sees the caller's SPIFFE ID; a plaintext
// client is refused by the PHI service.
func TestProxylessMTLS(t *testing.T) {
	ca, err := certs.New(certs.Options{TrustDomain: "medmesh.local", StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	consul := startConsul(t, true)
	cp := startControlPlane(t, consulSource(consul), func(o *controlplane.Options) { o.Identities = ca })

	// The EMR server: PHI (emr's default), mTLS only.
	callers := &callerRecorder{}
	port := freePort(t)
	serveXDS(t, bootstrap.Options{XDSAddress: cp.xdsAddr(), NodeID: "emr-1", Service: "emr", SVIDDir: svidDir(t, ca, "emr")}, port, true,
		callers.server("emr-1"))
	register(t, consul.Client(), "emr", "emr-1", port, map[string]string{"medmesh-kind": "emr", "medmesh-protocol": "grpc"}, api.HealthPassing)

	// The HIS client with xDS credentials and its own SVID.
	cc := dialXDSWith(t, bootstrap.Options{XDSAddress: cp.xdsAddr(), NodeID: "his-1", Service: "his", SVIDDir: svidDir(t, ca, "his")}, "emr", true)
	ctx := context.Background()
	c := consul.Client()
	// EMR is PHI: default deny. With no intention, his is refused after
	// the handshake, by the server's RBAC filter.
	waitDenied(t, "his refused by default", cc)
	// An intention allows it, without restarting anything.
	setIntention(t, c, "emr", "his", api.IntentionActionAllow)
	eventually(t, "an mTLS call succeeds", func() error {
		_, err := servedBy(ctx, cc, 1)
		if err != nil {
			_, cat := getStatus(t, cp, "/debug/catalog")
			if i := strings.Index(cat, "intentions"); i >= 0 {
				cat = cat[i:]
			}
			_, cfg := getStatus(t, cp, "/debug/config?node=emr-1")
			if i := strings.Index(cfg, "rbac"); i >= 0 {
				cfg = cfg[i:min(len(cfg), i+600)]
			}
			return fmt.Errorf("%w\ncatalog: %.300s\nconfig: %s", err, cat, cfg)
		}
		return nil
	})
	got := callers.last()
	if got != "spiffe://medmesh.local/ns/default/svc/his" {
		t.Fatalf("server saw caller %q", got)
	}

	// A deny intention takes it away again.
	setIntention(t, c, "emr", "his", api.IntentionActionDeny)
	waitDenied(t, "his refused after the deny", cc)

	// L7 intentions: his may call the service's methods (a path prefix)...
	setPermissions(t, c, "emr", "his", &api.IntentionHTTPPermission{PathPrefix: "/" + clinical.ServiceName + "/"})
	eventually(t, "an L7 intention allows the call", func() error { _, err := servedBy(ctx, cc, 1); return err })
	// ...then only another method: refused.
	setPermissions(t, c, "emr", "his", &api.IntentionHTTPPermission{PathExact: "/" + clinical.ServiceName + "/Other"})
	waitDenied(t, "his refused: its intention allows only another method", cc)

	// An intention for a service not registered yet is kept and shown.
	setIntention(t, c, "radiology", "his", api.IntentionActionAllow)
	eventually(t, "unresolved intention shown", func() error {
		for _, u := range proxies(t, cp).UnresolvedIntentions {
			if u == "his -> radiology: destination is not registered" {
				return nil
			}
		}
		return errors.New("not shown")
	})

	// A plaintext client of the same service is refused.
	plain := dialXDS(t, cp.xdsAddr(), "plain-client", "emr")
	for i := 0; i < 3; i++ {
		if _, err := servedBy(ctx, plain, 1); err == nil {
			t.Fatal("a plaintext call reached the PHI service")
		}
	}
}

// svidFromSecrets checks the SDS secrets a simulated Envoy holds: the SVID
// verifies against the bundle with go-spiffe and names the service.
func svidFromSecrets(st simproxy.State) (string, error) {
	sec, ok := st.Resources[resource.SecretType][wire.SVIDSecret].(*tlsv3.Secret)
	if !ok {
		return "", errors.New("no SVID secret")
	}
	bundle, ok := st.Resources[resource.SecretType][wire.BundleSecret].(*tlsv3.Secret)
	if !ok {
		return "", errors.New("no bundle secret")
	}
	chain := sec.GetTlsCertificate().GetCertificateChain().GetInlineBytes()
	key := sec.GetTlsCertificate().GetPrivateKey().GetInlineBytes()
	svid, err := x509svid.Parse(chain, key) // also checks the key matches
	if err != nil {
		return "", err
	}
	b, err := x509bundle.Parse(svid.ID.TrustDomain(), bundle.GetValidationContext().GetTrustedCa().GetInlineBytes())
	if err != nil {
		return "", err
	}
	if _, _, err := x509svid.Verify(svid.Certificates, b); err != nil {
		return "", err
	}
	return hex.EncodeToString(svid.Certificates[0].SerialNumber.Bytes()) + " " + svid.ID.String(), nil
}

// TestEnvoySDSAndRotation: an attested Envoy (development mode: loopback)
// gets its SVID and the bundle over SDS on its ADS stream, both transports;
// a rotation changes only the secrets; without proof there is no SVID.
func TestEnvoySDSAndRotation(t *testing.T) {
	ca, err := certs.New(certs.Options{TrustDomain: "medmesh.local", StateDir: t.TempDir(), SVIDTTL: 4 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	consul := startConsul(t, true)
	register(t, consul.Client(), "emr", "emr-1", 9101, nil, api.HealthPassing)
	register(t, consul.Client(), "emr", "emr-2", 9102, nil, api.HealthPassing)
	cp := startControlPlane(t, consulSource(consul), func(o *controlplane.Options) { o.Identities, o.Dev = ca, true })
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()

	for _, delta := range []bool{false, true} {
		id := map[bool]string{false: "emr-1", true: "emr-2"}[delta]
		rec := &countingRecorder{}
		p := startSimProxy(t, cp.xdsAddr(), simproxy.Options{NodeID: id, Cluster: "emr", Delta: delta, Validate: validateAll},
			grpc.WithStreamInterceptor(rec.interceptor()))
		var first string
		if err := p.Wait(ctx, func(s simproxy.State) bool {
			first, err = svidFromSecrets(s)
			return err == nil && fullConfig("emr")(s)
		}); err != nil {
			t.Fatalf("%s: %v (last: %v)", id, err, err)
		}
		if !strings.HasSuffix(first, " spiffe://medmesh.local/ns/default/svc/emr") {
			t.Fatalf("%s: SVID %s", id, first)
		}
		before := rec.count()
		// Renewal at half of the 4 s lifetime.
		if err := p.Wait(ctx, func(s simproxy.State) bool {
			now, err := svidFromSecrets(s)
			return err == nil && now != first
		}); err != nil {
			t.Fatalf("%s: SVID not rotated: %v", id, err)
		}
		if !delta { // the recorder sees SotW responses
			for _, typ := range rec.typesSince(before) {
				if typ != resource.SecretType {
					t.Errorf("%s: a rotation pushed %s", id, typ)
				}
			}
		}
	}
}

// TestNoSVIDWithoutProof: outside development mode no proxy is attested
// yet, so none gets an SVID and the refusal is logged.
func TestNoSVIDWithoutProof(t *testing.T) {
	ca, err := certs.New(certs.Options{TrustDomain: "medmesh.local", StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	consul := startConsul(t, true)
	register(t, consul.Client(), "emr", "emr-1", 9101, nil, api.HealthPassing)
	cp := startControlPlane(t, consulSource(consul), func(o *controlplane.Options) { o.Identities = ca })
	p := startSimProxy(t, cp.xdsAddr(), simproxy.Options{NodeID: "emr-1", Cluster: "emr", Validate: validateAll})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := p.Wait(ctx, fullConfig("emr")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "refusal logged", func() error {
		if !strings.Contains(cp.logs.String(), "no SVID for proxy") {
			return errors.New("not logged")
		}
		return nil
	})
	if len(p.State().Resources[resource.SecretType]) != 0 {
		t.Fatal("an unproven proxy received secrets")
	}
}

func setIntention(t *testing.T, c *api.Client, dst, src string, action api.IntentionAction) {
	t.Helper()
	_, _, err := c.ConfigEntries().Set(&api.ServiceIntentionsConfigEntry{
		Kind: api.ServiceIntentions, Name: dst,
		Sources: []*api.SourceIntention{{Name: src, Action: action}},
	}, nil)
	if err != nil {
		t.Fatalf("intention %s -> %s: %v", src, dst, err)
	}
}

// setPermissions writes an L7 intention: src may make the HTTP requests
// allow matches (gRPC method paths for gRPC services), nothing else.
func setPermissions(t *testing.T, c *api.Client, dst, src string, allow *api.IntentionHTTPPermission) {
	t.Helper()
	// L7 intentions need the destination to speak HTTP in Consul's eyes.
	if _, _, err := c.ConfigEntries().Set(&api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: dst, Protocol: "grpc"}, nil); err != nil {
		t.Fatalf("service-defaults %s: %v", dst, err)
	}
	_, _, err := c.ConfigEntries().Set(&api.ServiceIntentionsConfigEntry{
		Kind: api.ServiceIntentions, Name: dst,
		Sources: []*api.SourceIntention{{Name: src, Permissions: []*api.IntentionPermission{{Action: api.IntentionActionAllow, HTTP: allow}}}},
	}, nil)
	if err != nil {
		t.Fatalf("L7 intention %s -> %s: %v", src, dst, err)
	}
}

// waitDenied waits until calls are refused by the server's RBAC filter.
func waitDenied(t *testing.T, what string, cc *grpc.ClientConn) {
	t.Helper()
	eventually(t, what, func() error {
		_, err := servedBy(context.Background(), cc, 1)
		if status.Code(err) != codes.PermissionDenied {
			return fmt.Errorf("got %v, want PermissionDenied", err)
		}
		return nil
	})
}

// TestRootRotationReachesProxies: rotating the root (admin API) puts both
// roots in every Envoy's bundle secret during the overlap.
func TestRootRotationReachesProxies(t *testing.T) {
	ca, err := certs.New(certs.Options{TrustDomain: "medmesh.local", StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	consul := startConsul(t, true)
	register(t, consul.Client(), "emr", "emr-1", 9101, nil, api.HealthPassing)
	cp := startControlPlane(t, consulSource(consul), func(o *controlplane.Options) { o.Identities, o.Dev = ca, true })
	p := startSimProxy(t, cp.xdsAddr(), simproxy.Options{NodeID: "emr-1", Cluster: "emr", Validate: validateAll})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	roots := func(s simproxy.State) int {
		sec, ok := s.Resources[resource.SecretType][wire.BundleSecret].(*tlsv3.Secret)
		if !ok {
			return 0
		}
		b, err := x509bundle.Parse(ca.TrustDomain(), sec.GetValidationContext().GetTrustedCa().GetInlineBytes())
		if err != nil {
			return 0
		}
		return len(b.X509Authorities())
	}
	if err := p.Wait(ctx, func(s simproxy.State) bool { return roots(s) == 1 }); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(cp.adminURL()+"/ca/rotate?overlap=2h", "", nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("rotate: %v %v", err, resp)
	}
	if err := p.Wait(ctx, func(s simproxy.State) bool { return roots(s) == 2 }); err != nil {
		t.Fatalf("the new root did not reach the proxy: %v", err)
	}
}

// TestRenewAllSVIDs: POST /ca/renew-svids re-issues a connected proxy's
// SVID at once, long before its half-life (1 h SVIDs).
func TestRenewAllSVIDs(t *testing.T) {
	ca, err := certs.New(certs.Options{TrustDomain: "medmesh.local", StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	consul := startConsul(t, true)
	register(t, consul.Client(), "emr", "emr-1", 9101, nil, api.HealthPassing)
	cp := startControlPlane(t, consulSource(consul), func(o *controlplane.Options) { o.Identities, o.Dev = ca, true })
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	p := startSimProxy(t, cp.xdsAddr(), simproxy.Options{NodeID: "emr-1", Cluster: "emr", Delta: true, Validate: validateAll})
	var first string
	if err := p.Wait(ctx, func(s simproxy.State) bool {
		first, err = svidFromSecrets(s)
		return err == nil
	}); err != nil {
		t.Fatalf("first SVID: %v", err)
	}
	resp, err := http.Post(cp.adminURL()+"/ca/renew-svids", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /ca/renew-svids: %s", resp.Status)
	}
	if err := p.Wait(ctx, func(s simproxy.State) bool {
		now, err := svidFromSecrets(s)
		return err == nil && now != first
	}); err != nil {
		t.Fatalf("SVID not renewed: %v", err)
	}
}
