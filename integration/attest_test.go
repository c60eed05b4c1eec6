package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"medmesh/api/admin"
	"medmesh/api/wire"
	"medmesh/certs"
	"medmesh/controlplane"
	"medmesh/controlplane/attest"
	"medmesh/controlplane/identity"
	"medmesh/internal/consulagent"
	"medmesh/internal/kubetest"
	"medmesh/internal/simproxy"
	"medmesh/sidecar/svid"
)

// claim runs an SVID agent for node as service with the given proof, and
// returns a channel that receives the SPIFFE ID of every SVID it writes.
func claim(ctx context.Context, t *testing.T, cp *cpHandle, node, service string, set func(*svid.Options)) <-chan string {
	got := make(chan string, 4)
	o := svid.Options{XDSAddress: cp.xdsAddr(), NodeID: node, Service: service, Dir: t.TempDir(),
		OnWrite: func(s *x509svid.SVID) {
			select {
			case got <- s.ID.String():
			default:
			}
		}}
	set(&o)
	go svid.Run(ctx, o)
	return got
}

// identityOf reads a proxy's identity line from /debug/proxies.
func identityOf(cp *cpHandle, node string) (string, error) {
	resp, err := http.Get(cp.adminURL() + "/debug/proxies")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var pr admin.ProxiesResponse
	if err := json.NewDecoder(resp.Body).Decode(&pr); err != nil {
		return "", err
	}
	for _, p := range pr.Proxies {
		if p.ID == node {
			return p.Identity, nil
		}
	}
	return "", fmt.Errorf("%s not connected", node)
}

// expectRefused waits until node's claim is refused (shown in status and
// logged) and checks that it never received an SVID and that the token
// appears nowhere in the log.
func expectRefused(t *testing.T, cp *cpHandle, node string, got <-chan string, token, why string) {
	t.Helper()
	eventually(t, node+" refused", func() error {
		id, err := identityOf(cp, node)
		if err != nil {
			return err
		}
		if !strings.HasPrefix(id, "refused: ") || !strings.Contains(id, why) {
			return fmt.Errorf("identity %q, want a refusal saying %q", id, why)
		}
		if !strings.Contains(cp.logs.String(), "proxy="+node) {
			return errors.New("refusal not logged")
		}
		return nil
	})
	select {
	case id := <-got:
		t.Fatalf("%s received an SVID for %s", node, id)
	default:
	}
	if strings.Contains(cp.logs.String(), token) {
		t.Fatalf("the token presented by %s appears in the log", node)
	}
}

func expectSVID(t *testing.T, node string, got <-chan string, want string) {
	t.Helper()
	select {
	case id := <-got:
		if id != want {
			t.Fatalf("%s: SVID for %s, want %s", node, id, want)
		}
	case <-time.After(testTimeout):
		t.Fatalf("%s: no SVID", node)
	}
}

// TestConsulACLAttestation: with ACLs on in a real Consul, a workload that
// presents a Consul ACL token allowed to write its service gets that
// service's SVID; a token for another service, an unknown token, and a
// token claiming a service it may only read are refused.
func TestConsulACLAttestation(t *testing.T) {
	ca, err := certs.New(certs.Options{TrustDomain: "medmesh.local", StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	a, err := consulagent.New(t.TempDir(), true)
	if err != nil {
		t.Fatal(err)
	}
	a.ManagementToken = "6c1b4fd5-5c5e-4a5e-9d9c-3f3b1b2e7a01"
	ctx, cancel := context.WithTimeout(context.Background(), 2*testTimeout)
	defer cancel()
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Stop() })
	c := a.Client()

	token := func(ids []*api.ACLServiceIdentity, policies ...*api.ACLTokenPolicyLink) string {
		var secret string
		eventually(t, "an ACL token", func() error { // ACLs bootstrap just after the leader is elected
			tok, _, err := c.ACL().TokenCreate(&api.ACLToken{ServiceIdentities: ids, Policies: policies}, nil)
			if err != nil {
				return err
			}
			secret = tok.SecretID
			return nil
		})
		return secret
	}
	emrToken := token([]*api.ACLServiceIdentity{{ServiceName: "emr"}})
	hisToken := token([]*api.ACLServiceIdentity{{ServiceName: "his"}})
	pol, _, err := c.ACL().PolicyCreate(&api.ACLPolicy{Name: "read-emr", Rules: `service "emr" { policy = "read" }`}, nil)
	if err != nil {
		t.Fatal(err)
	}
	readerToken := token(nil, &api.ACLTokenPolicyLink{ID: pol.ID})

	cfg := api.DefaultConfig()
	cfg.Address = a.Addr()
	checker, err := attest.NewConsul(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cp := startControlPlane(t, consulSource(a), func(o *controlplane.Options) {
		o.Identities = ca
		o.Attestors = map[wire.ProofKind]identity.Attestor{wire.ProofConsul: checker}
	})
	withToken := func(tok string) func(*svid.Options) {
		return func(o *svid.Options) { o.ConsulToken = tok }
	}
	expectSVID(t, "emr-1/svid", claim(ctx, t, cp, "emr-1/svid", "emr", withToken(emrToken)), "spiffe://medmesh.local/ns/default/svc/emr")
	expectSVID(t, "his-1/svid", claim(ctx, t, cp, "his-1/svid", "his", withToken(hisToken)), "spiffe://medmesh.local/ns/default/svc/his")
	eventually(t, "emr's identity in status", func() error {
		if id, err := identityOf(cp, "emr-1/svid"); err != nil || id != "spiffe://medmesh.local/ns/default/svc/emr" {
			return fmt.Errorf("identity %q (%v)", id, err)
		}
		return nil
	})

	expectRefused(t, cp, "thief-1/svid", claim(ctx, t, cp, "thief-1/svid", "emr", withToken(hisToken)), hisToken, `may not write service "emr"`)
	expectRefused(t, cp, "reader-1/svid", claim(ctx, t, cp, "reader-1/svid", "emr", withToken(readerToken)), readerToken, `may not write service "emr"`)
	bogus := "0badc0de-0000-4000-8000-000000000000"
	expectRefused(t, cp, "bogus-1/svid", claim(ctx, t, cp, "bogus-1/svid", "emr", withToken(bogus)), bogus, "does not know the ACL token")
}

// TestKubernetesAttestation: against a real kube-apiserver, a workload
// presenting a projected service-account token (audience medmesh) of the
// service account named after its service gets that service's SVID; a
// token of another service account, a token for another audience and a
// token of a deleted service account are refused.
func TestKubernetesAttestation(t *testing.T) {
	_, kc := kubetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*testTimeout)
	defer cancel()
	for _, sa := range []string{"emr", "his"} {
		if _, err := kc.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	tokenFile := func(sa, audience string) (path, token string) {
		tr, err := kc.CoreV1().ServiceAccounts("default").CreateToken(ctx, sa, &authnv1.TokenRequest{
			Spec: authnv1.TokenRequestSpec{Audiences: []string{audience}}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("token for %s: %v", sa, err)
		}
		path = filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(path, []byte(tr.Status.Token), 0o600); err != nil {
			t.Fatal(err)
		}
		return path, tr.Status.Token
	}
	emrFile, _ := tokenFile("emr", attest.DefaultAudience)
	hisFile, hisTok := tokenFile("his", attest.DefaultAudience)
	apiFile, apiTok := tokenFile("emr", "https://kubernetes.default.svc")
	goneFile, goneTok := tokenFile("his", attest.DefaultAudience)

	ca, err := certs.New(certs.Options{TrustDomain: "medmesh.local", StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	consul := startConsul(t, true)
	register(t, consul.Client(), "emr", "emr-1", 9101, nil, api.HealthPassing)
	register(t, consul.Client(), "emr", "emr-2", 9102, nil, api.HealthPassing)
	cp := startControlPlane(t, consulSource(consul), func(o *controlplane.Options) {
		o.Identities = ca
		o.Attestors = map[wire.ProofKind]identity.Attestor{wire.ProofKubernetes: &attest.Kubernetes{Client: kc}}
	})
	withFile := func(f string) func(*svid.Options) {
		return func(o *svid.Options) { o.K8sTokenFile = f }
	}
	// The Envoy of a pod with no proof of its own: its SVID agent
	// (emr-1/svid, same IP) vouches for it once attested; an Envoy whose
	// pod has no attested agent, or claiming another service, gets none.
	envoy := startSimProxy(t, cp.xdsAddr(), simproxy.Options{NodeID: "emr-1", Cluster: "emr", Delta: true, Validate: validateAll})
	orphan := startSimProxy(t, cp.xdsAddr(), simproxy.Options{NodeID: "emr-2", Cluster: "emr", Delta: true, Validate: validateAll})
	expectSVID(t, "emr-1/svid", claim(ctx, t, cp, "emr-1/svid", "emr", withFile(emrFile)), "spiffe://medmesh.local/ns/default/svc/emr")
	if err := envoy.Wait(ctx, func(s simproxy.State) bool {
		id, err := svidFromSecrets(s)
		return err == nil && strings.HasSuffix(id, " spiffe://medmesh.local/ns/default/svc/emr")
	}); err != nil {
		t.Fatalf("the pod's Envoy got no SVID through its agent: %v", err)
	}
	eventually(t, "the orphan Envoy is shown without identity", func() error {
		if id, err := identityOf(cp, "emr-2"); err != nil || !strings.HasPrefix(id, "none") {
			return fmt.Errorf("identity %q (%v)", id, err)
		}
		return nil
	})
	if _, err := svidFromSecrets(orphan.State()); err == nil {
		t.Fatal("an Envoy with no attested agent got an SVID")
	}
	expectRefused(t, cp, "thief-1/svid", claim(ctx, t, cp, "thief-1/svid", "emr", withFile(hisFile)), hisTok,
		`service account default/his may act only as service "his"`)
	expectRefused(t, cp, "replay-1/svid", claim(ctx, t, cp, "replay-1/svid", "emr", withFile(apiFile)), apiTok,
		"did not authenticate")
	deleteSA(ctx, t, kc, "his")
	expectRefused(t, cp, "gone-1/svid", claim(ctx, t, cp, "gone-1/svid", "his", withFile(goneFile)), goneTok,
		"did not authenticate")
}

func deleteSA(ctx context.Context, t *testing.T, kc kubernetes.Interface, name string) {
	t.Helper()
	if err := kc.CoreV1().ServiceAccounts("default").Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
}
