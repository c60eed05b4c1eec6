// Command policy measures how long a policy edited through the Kubernetes
// API takes to reach a connected proxy: a real kube-apiserver (envtest,
// bin/k8s) with medmesh's CRDs, the control plane reading policies from
// it, and a simulated Envoy. Each round updates a MeshRoute with a new
// header match and times it from the Update call (as `kubectl apply`
// makes it) to the proxy holding the new route. It prints BENCH lines for `make bench`.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"medmesh/api/v1alpha1"
	"medmesh/api/wire"
	"medmesh/controlplane"
	"medmesh/controlplane/policy"
	"medmesh/internal/kubetest"
	"medmesh/internal/simproxy"
	"medmesh/registry"
)

func main() {
	rounds := flag.Int("rounds", 50, "policy updates to time")
	flag.Parse()
	if err := run(*rounds); err != nil {
		fmt.Fprintln(os.Stderr, "policy bench:", err)
		os.Exit(1)
	}
}

func run(rounds int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	env, cfg, err := kubetest.Env(filepath.Join("deploy", "crds"))
	if err != nil {
		return err
	}
	defer env.Stop()
	scheme, err := policy.Scheme()
	if err != nil {
		return err
	}
	kc, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}

	log := slog.New(slog.DiscardHandler)
	cp, err := controlplane.New(controlplane.Options{
		Logger: log, Source: &registry.File{Path: filepath.Join("examples", "policies", "catalog", "catalog.yaml"), Logger: log},
		Policies: &policy.Kubernetes{Config: cfg, Logger: log}, XDSListen: "127.0.0.1:0", AdminListen: "127.0.0.1:0",
	})
	if err != nil {
		return err
	}
	go cp.Run(ctx)
	conn, err := grpc.NewClient(cp.XDSAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	proxy, err := simproxy.Start(ctx, conn, simproxy.Options{NodeID: "his-1", Cluster: "his", Delta: true})
	if err != nil {
		return err
	}

	// Time edits, not start-up: wait until the proxy holds its routes.
	if err := proxy.Wait(ctx, func(s simproxy.State) bool {
		_, ok := s.Resources[resource.RouteType][wire.OutboundHTTPRoute]
		return ok
	}); err != nil {
		return fmt.Errorf("the proxy never got its first configuration: %w", err)
	}
	// The first object of a kind reaches the informer about two seconds
	// late on this API server (a freshly installed CRD's watch); a warm-up
	// object of its own keeps that out of the edit latency, and is
	// reported on its own.
	warm := &v1alpha1.MeshRoute{ObjectMeta: metav1.ObjectMeta{Name: "warm-up", Namespace: "default"},
		Spec: v1alpha1.MeshRouteSpec{Service: "his", Rules: []v1alpha1.RouteRule{{
			Name: "all", Destinations: []v1alpha1.WeightedDestination{{Subset: v1alpha1.Subset{"version": "current"}}},
		}}}}
	first := time.Now()
	if err := kc.Create(ctx, warm); err != nil {
		return err
	}
	if err := proxy.Wait(ctx, func(s simproxy.State) bool {
		_, ok := s.Resources[resource.ClusterType]["his|version=current"]
		return ok
	}); err != nil {
		return fmt.Errorf("warm-up route: %w", err)
	}
	warmUp := time.Since(first)
	route := &v1alpha1.MeshRoute{ObjectMeta: metav1.ObjectMeta{Name: "emr-canary", Namespace: "default"}}
	var took []time.Duration
	for i := 0; i < rounds; i++ {
		marker := fmt.Sprintf("round-%d", i)
		spec := v1alpha1.MeshRouteSpec{Service: "emr", Rules: []v1alpha1.RouteRule{{
			Name:         "testers",
			Match:        &v1alpha1.RouteMatch{Headers: []v1alpha1.HeaderMatch{{Name: "x-medmesh-canary", Value: marker}}},
			Destinations: []v1alpha1.WeightedDestination{{Subset: v1alpha1.Subset{"version": "v2"}}},
		}}}
		start := time.Now()
		if i == 0 {
			route.Spec = spec
			err = kc.Create(ctx, route)
		} else {
			err = update(ctx, kc, route, spec)
		}
		if err != nil {
			return fmt.Errorf("round %d: %w", i, err)
		}
		if err := proxy.Wait(ctx, func(s simproxy.State) bool {
			rc, ok := s.Resources[resource.RouteType][wire.OutboundHTTPRoute]
			if !ok {
				return false
			}
			b, _ := protojson.Marshal(rc)
			return strings.Contains(string(b), `"`+marker+`"`)
		}); err != nil {
			return fmt.Errorf("round %d: the proxy never got the route: %w", i, err)
		}
		took = append(took, time.Since(start))
	}
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	pct := func(p float64) float64 {
		return float64(took[int(p*float64(len(took)-1))].Microseconds()) / 1000
	}
	fmt.Printf("%d MeshRoute updates, from the API call to a connected proxy holding the route (real kube-apiserver, informer, control plane, delta xDS)\n", len(took))
	fmt.Printf("BENCH policy_apply_p50_ms=%.1f\n", pct(0.5))
	fmt.Printf("BENCH policy_apply_p99_ms=%.1f\n", pct(0.99))
	fmt.Printf("BENCH policy_apply_max_ms=%.1f\n", pct(1))
	fmt.Printf("BENCH policy_apply_first_object_ms=%.1f   (the first object after start, informer warm-up included)\n",
		float64(warmUp.Microseconds())/1000)
	return nil
}

// update replaces the route's spec, retrying when the control plane's own
// status write got in first.
func update(ctx context.Context, kc client.Client, route *v1alpha1.MeshRoute, spec v1alpha1.MeshRouteSpec) error {
	for {
		if err := kc.Get(ctx, client.ObjectKeyFromObject(route), route); err != nil {
			return err
		}
		route.Spec = spec
		err := kc.Update(ctx, route)
		if err == nil || !strings.Contains(err.Error(), "the object has been modified") {
			return err
		}
	}
}
