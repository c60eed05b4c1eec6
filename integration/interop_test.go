package integration

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"medmesh/controlplane"
	"medmesh/controlplane/bootstrap"
	"medmesh/controlplane/ir"
	"medmesh/controlplane/policy"
	"medmesh/controlplane/translate"
	"medmesh/examples/clinical"
)

// The interop suite runs the same scenarios against every independent
// gRPC xDS implementation available here, each as its users run it:
// grpc-go in process, and Node's @grpc/grpc-js with @grpc/grpc-js-xds as
// a Node process with a bootstrap from medmesh's bootstrap package. A
// crash, a failed call where none may fail, or a NACK (seen by the control
// plane's tracker) fails the test with its reason.

// xdsClient is one implementation's client channel to xds:///<service>.
type xdsClient interface {
	// calls makes n sequential calls on the one channel and counts which
	// instance answered and which errors came back. An error means the
	// client itself is gone (crashed, exited).
	calls(n int, headers map[string]string) (served, errs map[string]int, err error)
}

// implementation is one gRPC xDS implementation under test. Both take
// the proxy's bootstrap options; with an SVID directory the client or
// server uses the implementation's xDS credentials (mTLS from the control
// plane, certificates from the directory).
type implementation struct {
	name string
	// client opens a channel to xds:///<target>.
	client func(t *testing.T, o bootstrap.Options, target string) xdsClient
	// server runs an xDS server (gRFC A36) for instance o.NodeID of
	// o.Service listening on addr (IP:port).
	server func(t *testing.T, o bootstrap.Options, addr string)
}

var implementations = []implementation{
	{name: "grpc-go", client: goClient, server: goServer},
	{name: "grpc-js", client: jsClient, server: jsServer},
}

type goChannel struct{ cc *grpc.ClientConn }

func goClient(t *testing.T, o bootstrap.Options, target string) xdsClient {
	return goChannel{dialXDSWith(t, o, target, o.SVIDDir != "")}
}

func (g goChannel) calls(n int, headers map[string]string) (map[string]int, map[string]int, error) {
	served, errs := map[string]int{}, map[string]int{}
	ctx := context.Background()
	for k, v := range headers {
		ctx = metadata.AppendToOutgoingContext(ctx, k, v)
	}
	for i := 0; i < n; i++ {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		inst, err := clinical.Fetch(cctx, g.cc, "Observation")
		cancel()
		if err != nil {
			s := status.Convert(err)
			errs[s.Code().String()+": "+s.Message()]++
			continue
		}
		served[inst]++
	}
	return served, errs, nil
}

func goServer(t *testing.T, o bootstrap.Options, addr string) {
	network := "tcp"
	if host, _, _ := net.SplitHostPort(addr); net.ParseIP(host).To4() != nil {
		network = "tcp4" // Go's "tcp" on 0.0.0.0 listens, and reports, [::]
	}
	lis, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	serveXDSOn(t, o, lis, o.SVIDDir != "", &clinical.Server{Instance: o.NodeID})
}

type jsChannel struct{ p *nodeProc }

// jsServerEnv is the environment grpc-js servers run with: grpc-js-xds
// 1.14 implements the RBAC HTTP filter only behind this switch, and
// without it NACKs every mTLS listener (fail closed: see
// TestGRPCJSServerWithoutRBACFailsClosed).
var jsServerEnv = []string{"GRPC_XDS_EXPERIMENTAL_RBAC=true"}

var jsCallID atomic.Int64

func jsClient(t *testing.T, o bootstrap.Options, target string) xdsClient {
	p := startNode(t, o.NodeID, "client.js", o, nil, target, credsArg(o))
	if _, err := p.next(testTimeout, func(m map[string]any) bool { return m["event"] == "ready" }); err != nil {
		t.Fatal(err)
	}
	return jsChannel{p}
}

// credsArg tells the scripts which credentials to use.
func credsArg(o bootstrap.Options) string {
	if o.SVIDDir != "" {
		return "xds"
	}
	return "insecure"
}

func (j jsChannel) calls(n int, headers map[string]string) (map[string]int, map[string]int, error) {
	id := jsCallID.Add(1)
	if err := j.p.send(map[string]any{"id": id, "calls": n, "headers": headers}); err != nil {
		return nil, nil, err
	}
	// Each call has a 5 s deadline.
	m, err := j.p.next(time.Duration(n)*5*time.Second+testTimeout, func(m map[string]any) bool { return m["id"] == float64(id) })
	if err != nil {
		return nil, nil, err
	}
	return counts(m["served"]), counts(m["errors"]), nil
}

func jsServer(t *testing.T, o bootstrap.Options, addr string) {
	// The scenario sees through its calls whether the server serves; a
	// bind error or crash it reports is logged with its output.
	startNode(t, o.NodeID, "server.js", o, jsServerEnv, addr, o.NodeID, credsArg(o))
}

// labInstance is a grpc-go xDS server whose failures the test controls.
type labInstance struct {
	id      string
	failing atomic.Bool
	failed  atomic.Int64
}

func (l *labInstance) handler() *clinical.Server {
	return &clinical.Server{Instance: l.id, Handle: func(context.Context, string) error {
		if l.failing.Load() {
			l.failed.Add(1)
			return errUnavailable
		}
		return nil
	}}
}

// TestInterop runs every scenario against every implementation.
func TestInterop(t *testing.T) {
	nodeEnv(t) // fail at once, with the way out, if grpc-js is missing
	for _, impl := range implementations {
		t.Run(impl.name, func(t *testing.T) { runInterop(t, impl) })
	}
}

func runInterop(t *testing.T, impl implementation) {
	consul := startConsul(t, true)
	c := consul.Client()
	dir := t.TempDir()
	cp := startControlPlane(t, consulSource(consul), func(o *controlplane.Options) {
		o.Policies = &policy.Dir{Path: dir, Interval: 20 * time.Millisecond, Logger: o.Logger}
	})
	meta := func(version string) map[string]string {
		return map[string]string{"medmesh-kind": "generic", "medmesh-protocol": "grpc", "version": version}
	}
	lab := map[string]*labInstance{}
	for i, version := range []string{"v1", "v2"} {
		in := &labInstance{id: "lab-" + strconv.Itoa(i+1)}
		lab[in.id] = in
		port := freePort(t)
		serveXDS(t, bootstrap.Options{XDSAddress: cp.xdsAddr(), NodeID: in.id, Service: "lab"}, port, false, in.handler())
		register(t, c, "lab", in.id, port, meta(version), api.HealthPassing)
	}
	opened := time.Now()
	client := impl.client(t, bootstrap.Options{XDSAddress: cp.xdsAddr(), NodeID: impl.name + "-ward-1", Service: "ward"}, "lab")
	clientID := impl.name + "-ward-1"
	// must runs a batch of calls; a gone client ends the test with why.
	must := func(n int, headers map[string]string) (map[string]int, map[string]int) {
		t.Helper()
		served, errs, err := client.calls(n, headers)
		if err != nil {
			t.Fatalf("%s: %v", impl.name, err)
		}
		return served, errs
	}
	step := func(what string, f func() error) {
		t.Helper()
		eventually(t, impl.name+": "+what, f)
		noNACKs(t, cp, impl.name+": "+what)
	}
	// setPolicy writes (or, with data "", removes) a policy file and waits
	// until the control plane has exactly that file's policies in force
	// (the scenarios use one file at a time) and the client has ACKed the
	// configuration made from them: calls that follow see that policy,
	// not the previous one, without guessing from call counts.
	setPolicy := func(name, data string) {
		t.Helper()
		if data == "" {
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				t.Fatal(err)
			}
		} else {
			tmp := filepath.Join(dir, "."+name+".tmp")
			if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
				t.Fatal(err)
			}
		}
		eventually(t, impl.name+": "+name+" in force and ACKed", func() error {
			for _, o := range policies(t, cp).Objects {
				if (data == "") == (o.Source == filepath.Join(dir, name)) || !o.Accepted() {
					return fmt.Errorf("policy %s from %s accepted=%t: %s", o.Key, o.Source, o.Accepted(), o.Message())
				}
			}
			if data != "" && len(policies(t, cp).Objects) == 0 {
				return errors.New("no policy in force yet")
			}
			return inSync(t, cp, clientID)
		})
	}

	step("round robin over both instances", func() error {
		served, errs := must(20, nil)
		if err := jsErrors(errs); err != nil {
			return err
		}
		if served["lab-1"] < 8 || served["lab-2"] < 8 {
			return fmt.Errorf("served by %s; want about 10 each", keys(served))
		}
		return nil
	})

	setHealth(t, c, "lab-1", api.HealthCritical)
	step("lab-1's failed check withdraws it", func() error {
		served, errs := must(10, nil)
		if err := jsErrors(errs); err != nil {
			return err
		}
		if served["lab-2"] != 10 {
			return fmt.Errorf("served by %s; want lab-2 only", keys(served))
		}
		return nil
	})
	// The channel stays open past every timer medmesh configures for it:
	// outlier detection runs every Interval (grpc-js crashed at the first
	// one when success-rate fields were unset), a call's deadline is the
	// request timeout. Wait until the interval timer has fired at least
	// twice, calling all along.
	d := ir.DefaultDefaults()
	openFor := max(2*d.Outlier.Interval, d.RequestTimeout) + time.Second
	eventually(t, impl.name+": the channel answers past every timer", func() error {
		served, errs := must(5, nil)
		if err := jsErrors(errs); err != nil {
			t.Fatalf("%s: a call failed while the channel stayed open: %v", impl.name, err)
		}
		if served["lab-2"] != 5 {
			t.Fatalf("%s: served by %s after lab-1 was withdrawn", impl.name, keys(served))
		}
		if open := time.Since(opened); open < openFor {
			return fmt.Errorf("open for %s of %s", open.Round(time.Second), openFor)
		}
		return nil
	})
	setHealth(t, c, "lab-1", api.HealthPassing)
	step("lab-1 restored", func() error {
		served, errs := must(20, nil)
		if err := jsErrors(errs); err != nil {
			return err
		}
		if served["lab-1"] == 0 {
			return fmt.Errorf("served by %s", keys(served))
		}
		return nil
	})

	setPolicy("lab-route.yaml", `apiVersion: policy.medmesh.io/v1alpha1
kind: MeshRoute
metadata: {name: lab}
spec:
  service: lab
  rules:
  - name: drill
    match:
      headers: [{name: x-medmesh-drill, type: Present}]
    destinations: [{}]
    fault:
      abort: {grpcStatus: 7, percent: 100}
  - name: split
    destinations:
    - {subset: {version: v1}, weight: 90}
    - {subset: {version: v2}, weight: 10}
`)
	step("a 90/10 MeshRoute split", func() error {
		served, errs := must(100, nil)
		if err := jsErrors(errs); err != nil {
			return err
		}
		// Binomial(100, 0.9): fewer than 75 on v1 or none on v2 is a
		// many-sigma event; round robin would give 50/50.
		if served["lab-1"] < 75 || served["lab-2"] == 0 {
			return fmt.Errorf("served by %s; want about 90 lab-1 (v1), 10 lab-2 (v2)", keys(served))
		}
		return nil
	})
	// A header match with fault injection: the drill gets the injected
	// status, never an instance.
	served, errs := must(5, map[string]string{"x-medmesh-drill": "1"})
	denied := 0
	for msg, n := range errs {
		if strings.HasPrefix(msg, "PermissionDenied:") || strings.HasPrefix(msg, "PERMISSION_DENIED:") {
			denied += n
		}
	}
	if len(served) != 0 || denied != 5 {
		t.Errorf("%s: drill calls served by %s, errors %v; want 5 injected PermissionDenied", impl.name, keys(served), errs)
	}
	setPolicy("lab-route.yaml", "")

	setPolicy("lab-dest.yaml", `apiVersion: policy.medmesh.io/v1alpha1
kind: MeshDestination
metadata: {name: lab}
spec:
  service: lab
  loadBalancer: {algorithm: RingHash}
`)
	step("ring hash: one channel sticks to one instance", func() error {
		served, errs := must(20, nil)
		if err := jsErrors(errs); err != nil {
			return err
		}
		if len(served) != 1 {
			return fmt.Errorf("served by %s; want one instance", keys(served))
		}
		return nil
	})
	// The affinity header is hashed: each key sticks to one instance, and
	// 16 keys reach both.
	reached := map[string]bool{}
	for k := 0; k < 16; k++ {
		served, errs := must(3, map[string]string{translate.AffinityHeader: "study-" + strconv.Itoa(k)})
		if err := jsErrors(errs); err != nil {
			t.Fatalf("%s: affinity key %d: %v", impl.name, k, err)
		}
		if len(served) != 1 {
			t.Fatalf("%s: affinity key %d served by %s; want one instance", impl.name, k, keys(served))
		}
		for inst := range served {
			reached[inst] = true
		}
	}
	if len(reached) != 2 {
		t.Errorf("%s: 16 affinity keys reached only %v", impl.name, reached)
	}
	// Least request: grpc-go implements it, grpc-js does not; each must
	// take the cluster and reach both instances.
	setPolicy("lab-dest.yaml", `apiVersion: policy.medmesh.io/v1alpha1
kind: MeshDestination
metadata: {name: lab}
spec:
  service: lab
  loadBalancer: {algorithm: LeastRequest}
`)
	step("least request reaches both instances", func() error {
		served, errs := must(20, nil)
		if err := jsErrors(errs); err != nil {
			return err
		}
		if len(served) != 2 {
			return fmt.Errorf("served by %s", keys(served))
		}
		return nil
	})
	setPolicy("lab-dest.yaml", "")
	step("round robin again without the destination policy", func() error {
		served, errs := must(20, nil)
		if err := jsErrors(errs); err != nil {
			return err
		}
		if len(served) != 2 {
			return fmt.Errorf("served by %s", keys(served))
		}
		return nil
	})

	// Retries of UNAVAILABLE: lab-1 fails every call it gets, and no call
	// fails, because each is retried on lab-2.
	lab["lab-1"].failing.Store(true)
	served, errs = must(20, nil)
	lab["lab-1"].failing.Store(false)
	if err := jsErrors(errs); err != nil {
		t.Fatalf("%s: calls failed although UNAVAILABLE is retried: %v", impl.name, err)
	}
	if served["lab-2"] != 20 || lab["lab-1"].failed.Load() == 0 {
		t.Fatalf("%s: served by %s, lab-1 failed %d calls; want every call answered by lab-2 after lab-1 failed some",
			impl.name, keys(served), lab["lab-1"].failed.Load())
	}
	noNACKs(t, cp, impl.name+": retries")

	// Servers of this implementation on wildcard addresses (IPv4 and
	// IPv6) and on the registered address itself (loopback), called by
	// this implementation.
	hosts := []string{"0.0.0.0", "::", "127.0.0.1"}
	for i, host := range hosts {
		id := fmt.Sprintf("%s-records-%d", impl.name, i+1)
		port := freePort(t)
		impl.server(t, bootstrap.Options{XDSAddress: cp.xdsAddr(), NodeID: id, Service: "records"}, net.JoinHostPort(host, strconv.Itoa(port)))
		register(t, c, "records", id, port, meta("v1"), api.HealthPassing)
	}
	records := impl.client(t, bootstrap.Options{XDSAddress: cp.xdsAddr(), NodeID: impl.name + "-ward-2", Service: "ward"}, "records")
	step("servers on 0.0.0.0, [::] and their registered address serve", func() error {
		served, errs, err := records.calls(12, nil)
		if err != nil {
			t.Fatalf("%s: %v", impl.name, err)
		}
		if err := jsErrors(errs); err != nil {
			return fmt.Errorf("%w; %s", err, proxyProblems(t, cp))
		}
		if len(served) != len(hosts) {
			return fmt.Errorf("served by %s", keys(served))
		}
		return nil
	})
	noNACKs(t, cp, impl.name+": at the end")
}

// inSync says whether proxy id has ACKed every listener, route and
// cluster version last published for it.
func inSync(t *testing.T, cp *cpHandle, id string) error {
	t.Helper()
	short := map[string]string{resource.ListenerType: "LDS", resource.RouteType: "RDS", resource.ClusterType: "CDS"}
	for _, p := range proxies(t, cp).Proxies {
		if p.ID != id {
			continue
		}
		for typ, name := range short {
			if want, got := p.Published[typ], p.Types[name].Acked; want == "" || got != want {
				return fmt.Errorf("%s: %s ACKed %q, published %q", id, name, got, want)
			}
		}
		return nil
	}
	return fmt.Errorf("%s is not connected", id)
}

// noNACKs fails the test if any proxy ever NACKed, naming it and why.
func noNACKs(t *testing.T, cp *cpHandle, when string) {
	t.Helper()
	var errs []error
	for _, p := range proxies(t, cp).Proxies {
		if p.NACKs > 0 {
			msg := ""
			if p.LastNACK != nil {
				msg = p.LastNACK.TypeURL + ": " + p.LastNACK.Message
			}
			errs = append(errs, fmt.Errorf("proxy %s (%s) NACKed %d times, last: %s", p.ID, p.Kind, p.NACKs, msg))
		}
	}
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("%s: %v", when, err)
	}
}
