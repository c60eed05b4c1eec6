package integration

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"
	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"medmesh/api/v1alpha1"
	"medmesh/controlplane"
	"medmesh/controlplane/policy"
	"medmesh/internal/kubetest"
)

// TestKubernetesPolicies: with policies from a real kube-apiserver (CRDs
// from deploy/crds), a MeshRoute created with the Kubernetes API steers a
// real grpc-go client's calls and gets Accepted in its status; an update
// takes effect; a route the API server accepts but medmesh cannot apply
// (its service does not exist) is marked Invalid in status, naming the
// field, and changes nothing; an object the schema refuses is refused by
// the API server with a message naming the field.
func TestKubernetesPolicies(t *testing.T) {
	cfg, _ := kubetest.Start(t, filepath.Join("..", "deploy", "crds"))
	scheme, err := policy.Scheme()
	if err != nil {
		t.Fatal(err)
	}
	if err := coordinationv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	kc, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*testTimeout)
	defer cancel()

	consul := startConsul(t, true)
	c := consul.Client()
	cp := startControlPlane(t, consulSource(consul), func(o *controlplane.Options) {
		// Statuses are written by the holder of a Lease, as with two
		// replicas; this one must win it to write any.
		o.Policies = &policy.Kubernetes{Config: cfg, Logger: o.Logger,
			StatusLease: &policy.Lease{Namespace: "default", Name: "medmesh-policy-status", Identity: "replica-a"}}
	})
	cc, expect := canaryEMR(t, cp, c)
	tester := metadata.AppendToOutgoingContext(context.Background(), "x-medmesh-canary", "true")
	plain := context.Background()
	decode := func(doc string) *v1alpha1.MeshRoute {
		r := &v1alpha1.MeshRoute{}
		if err := yaml.UnmarshalStrict([]byte(doc), r); err != nil {
			t.Fatal(err)
		}
		r.Namespace = "default"
		return r
	}
	accepted := func(name string) func() error {
		return func() error {
			var r v1alpha1.MeshRoute
			if err := kc.Get(ctx, client.ObjectKey{Namespace: "default", Name: name}, &r); err != nil {
				return err
			}
			for _, cond := range r.Status.Conditions {
				if cond.Type == v1alpha1.ConditionAccepted && cond.Status == metav1.ConditionTrue && r.Status.ObservedGeneration == r.Generation {
					return nil
				}
			}
			return fmt.Errorf("status %+v (generation %d)", r.Status, r.Generation)
		}
	}

	route := decode(canaryRoute("v2", "v1"))
	if err := kc.Create(ctx, route); err != nil {
		t.Fatal(err)
	}
	expect("testers reach the canary (emr-2)", tester, "emr-2")
	expect("everyone else reaches stable (emr-1)", plain, "emr-1")
	eventually(t, "the route's status says Accepted", accepted("emr-canary"))

	// An update swaps the subsets.
	eventually(t, "update the route", func() error {
		cur := &v1alpha1.MeshRoute{}
		if err := kc.Get(ctx, client.ObjectKey{Namespace: "default", Name: "emr-canary"}, cur); err != nil {
			return err
		}
		cur.Spec = decode(canaryRoute("v1", "v2")).Spec
		return kc.Update(ctx, cur) // a conflict with our own status write is retried
	})
	expect("after the update, testers reach emr-1", tester, "emr-1")
	expect("after the update, everyone else reaches emr-2", plain, "emr-2")
	eventually(t, "the updated route's status says Accepted", accepted("emr-canary"))

	// Well-formed for the API server, but its service does not exist.
	ghost := decode(strings.Replace(strings.Replace(canaryRoute("v2", "v1"), "service: emr", "service: radiology", 1),
		"name: emr-canary", "name: radiology-canary", 1))
	if err := kc.Create(ctx, ghost); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the ghost route is Invalid in its status, naming the field", func() error {
		var r v1alpha1.MeshRoute
		if err := kc.Get(ctx, client.ObjectKeyFromObject(ghost), &r); err != nil {
			return err
		}
		for _, cond := range r.Status.Conditions {
			if cond.Type == v1alpha1.ConditionAccepted && cond.Status == metav1.ConditionFalse &&
				strings.Contains(cond.Message, "spec.service") {
				return nil
			}
		}
		return fmt.Errorf("status %+v", r.Status)
	})
	if err := allServedBy(plain, cc, 10, "emr-2"); err != nil {
		t.Fatalf("an invalid route changed routing: %v", err)
	}

	var lease coordinationv1.Lease
	if err := kc.Get(ctx, client.ObjectKey{Namespace: "default", Name: "medmesh-policy-status"}, &lease); err != nil {
		t.Fatalf("the status lease: %v", err)
	}
	if h := lease.Spec.HolderIdentity; h == nil || *h != "replica-a" {
		t.Fatalf("status lease held by %v, want replica-a", h)
	}

	// The schema refuses a negative timeout, naming the field.
	bad := decode(canaryRoute("v2", "v1"))
	bad.Name = "emr-bad"
	bad.Spec.Rules[0].Timeout = &metav1.Duration{Duration: -time.Second}
	err = kc.Create(ctx, bad)
	if err == nil || !strings.Contains(err.Error(), "timeout") {
		t.Fatalf("a negative timeout: %v, want a refusal naming the field", err)
	}
}
