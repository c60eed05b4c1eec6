package integration

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"medmesh/api/admin"
	"medmesh/certs"
	"medmesh/controlplane"
	"medmesh/controlplane/bootstrap"
	"medmesh/examples/clinical"
	"medmesh/sidecar/svid"
)

// TestSVIDRotationUnderLoad: `medmesh sidecar --svid-dir` keeps a
// proxyless client's and server's SVIDs fresh; while SVIDs rotate (a 6 s
// lifetime, renewed every 3 s), a continuous stream of mTLS calls sees no
// failure.
func TestSVIDRotationUnderLoad(t *testing.T) {
	ca, err := certs.New(certs.Options{TrustDomain: "medmesh.local", StateDir: t.TempDir(), SVIDTTL: 6 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	consul := startConsul(t, true)
	c := consul.Client()
	cp := startControlPlane(t, consulSource(consul), func(o *controlplane.Options) { o.Identities, o.Dev = ca, true })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// One SVID agent per workload, as `medmesh sidecar --svid-dir` runs.
	var written [2]atomic.Int32
	agent := func(i int, svc string) string {
		dir := filepath.Join(t.TempDir(), svc)
		first := make(chan struct{})
		var once atomic.Bool
		go svid.Run(ctx, svid.Options{
			XDSAddress: cp.xdsAddr(), NodeID: svc + "-1/svid", Service: svc, Dir: dir,
			OnWrite: func(*x509svid.SVID) {
				written[i].Add(1)
				if once.CompareAndSwap(false, true) {
					close(first)
				}
			},
		})
		select {
		case <-first:
		case <-time.After(testTimeout):
			t.Fatalf("no SVID written for %s", svc)
		}
		return dir
	}
	emrDir, hisDir := agent(0, "emr"), agent(1, "his")
	setIntention(t, c, "emr", "his", api.IntentionActionAllow)

	port := freePort(t)
	serveXDS(t, bootstrap.Options{XDSAddress: cp.xdsAddr(), NodeID: "emr-1", Service: "emr",
		SVIDDir: emrDir, SVIDRefresh: 500 * time.Millisecond}, port, true, &clinical.Server{Instance: "emr-1"})
	register(t, c, "emr", "emr-1", port, map[string]string{"medmesh-kind": "emr", "medmesh-protocol": "grpc"}, api.HealthPassing)
	cc := dialXDSWith(t, bootstrap.Options{XDSAddress: cp.xdsAddr(), NodeID: "his-1", Service: "his",
		SVIDDir: hisDir, SVIDRefresh: 500 * time.Millisecond}, "emr", true)
	eventually(t, "first mTLS call", func() error { _, err := servedBy(ctx, cc, 1); return err })

	// Call continuously until both workloads have rotated twice. After
	// every rotation a new channel is dialled as well, so that fresh TLS
	// handshakes use the rotated certificates on both sides (calls on the
	// first channel reuse its established connection).
	start := [2]int32{written[0].Load(), written[1].Load()}
	calls, fresh := 0, 0
	seen := start[0] + start[1]
	deadline := time.Now().Add(testTimeout)
	for written[0].Load() < start[0]+2 || written[1].Load() < start[1]+2 {
		if time.Now().After(deadline) {
			t.Fatalf("SVIDs did not rotate twice (emr %d, his %d writes)", written[0].Load(), written[1].Load())
		}
		if _, err := servedBy(ctx, cc, 1); err != nil {
			t.Fatalf("call %d failed during rotation: %v", calls, err)
		}
		calls++
		if now := written[0].Load() + written[1].Load(); now != seen {
			seen = now
			cc2 := dialXDSWith(t, bootstrap.Options{XDSAddress: cp.xdsAddr(), NodeID: "his-1", Service: "his",
				SVIDDir: hisDir, SVIDRefresh: 500 * time.Millisecond}, "emr", true)
			if _, err := servedBy(ctx, cc2, 1); err != nil {
				t.Fatalf("a new connection after a rotation failed: %v", err)
			}
			cc2.Close()
			fresh++
		}
	}
	t.Logf("%d calls across two rotations of each SVID, and %d new connections after rotations; none failed", calls, fresh)
	if calls == 0 || fresh < 2 {
		t.Fatalf("%d calls, %d new connections after rotations", calls, fresh)
	}
}

// TestJoinTokenAttestation: outside development mode, a workload proves
// its identity with a one-time join token from the admin API and gets its
// SVID; a token for another service is refused and logged, and a
// workload without proof gets nothing.
func TestJoinTokenAttestation(t *testing.T) {
	ca, err := certs.New(certs.Options{TrustDomain: "medmesh.local", StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	consul := startConsul(t, true)
	cp := startControlPlane(t, consulSource(consul), func(o *controlplane.Options) { o.Identities = ca })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	resp, err := http.Post(cp.adminURL()+"/join-tokens?service=emr", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var tok admin.JoinTokenResponse
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || tok.Token == "" {
		t.Fatalf("token: %v %+v", err, tok)
	}
	resp.Body.Close()

	got := make(chan string, 1)
	go svid.Run(ctx, svid.Options{
		XDSAddress: cp.xdsAddr(), NodeID: "emr-1/svid", Service: "emr", Dir: t.TempDir(), JoinToken: tok.Token,
		OnWrite: func(s *x509svid.SVID) {
			select {
			case got <- s.ID.String():
			default:
			}
		},
	})
	select {
	case id := <-got:
		if id != "spiffe://medmesh.local/ns/default/svc/emr" {
			t.Fatalf("SVID for %s", id)
		}
	case <-time.After(testTimeout):
		t.Fatal("no SVID for a workload with a valid join token")
	}

	// The same token claimed for another service (or by another node).
	stolen := make(chan string, 1)
	go svid.Run(ctx, svid.Options{
		XDSAddress: cp.xdsAddr(), NodeID: "his-1/svid", Service: "his", Dir: t.TempDir(), JoinToken: tok.Token,
		OnWrite: func(s *x509svid.SVID) { stolen <- s.ID.String() },
	})
	eventually(t, "the stolen token is refused and logged", func() error {
		logs := cp.logs.String()
		if !strings.Contains(logs, "SVID request refused") || !strings.Contains(logs, `proxy=his-1/svid`) {
			return errors.New("not logged")
		}
		if strings.Contains(logs, tok.Token) {
			t.Fatal("the join token appears in the log")
		}
		return nil
	})
	select {
	case id := <-stolen:
		t.Fatalf("an SVID (%s) was handed out on a stolen token", id)
	default:
	}
}

// TestWorkloadAPI: a go-spiffe workloadapi client fetches its SVID (and
// the bundle that verifies it) from `medmesh sidecar --workload-api`.
func TestWorkloadAPI(t *testing.T) {
	ca, err := certs.New(certs.Options{TrustDomain: "medmesh.local", StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	consul := startConsul(t, true)
	cp := startControlPlane(t, consulSource(consul), func(o *controlplane.Options) { o.Identities, o.Dev = ca, true })
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()

	api := svid.NewWorkloadAPI()
	sock := "unix://" + filepath.Join(t.TempDir(), "workload.sock")
	go svid.ServeWorkloadAPI(ctx, sock, api)
	go svid.Run(ctx, svid.Options{
		XDSAddress: cp.xdsAddr(), NodeID: "imaging-1/svid", Service: "imaging", WorkloadAPI: api,
	})
	got, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr(sock))
	if err != nil {
		t.Fatal(err)
	}
	if got.ID.String() != "spiffe://medmesh.local/ns/default/svc/imaging" {
		t.Fatalf("SVID for %s", got.ID)
	}
	bundles, err := workloadapi.FetchX509Bundles(ctx, workloadapi.WithAddr(sock))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := x509svid.Verify(got.Certificates, bundles); err != nil {
		t.Fatalf("SVID from the Workload API does not verify against its bundle: %v", err)
	}
}
