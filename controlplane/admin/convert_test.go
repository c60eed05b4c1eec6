package admin

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	api "medmesh/api/admin"
	"medmesh/api/v1alpha1"
	"medmesh/controlplane/policy"
	"medmesh/controlplane/xds"
	"medmesh/registry"
)

var updateAdmin = flag.Bool("update-admin", false, "rewrite testdata/admin from the current conversion")

// TestAdminJSONGolden pins the admin API's JSON: the bodies the handlers
// write, converted from fixed control-plane state, must match
// testdata/admin byte for byte. The golden files were first written by
// the control plane that encoded its internal types directly, so they
// are the JSON clients have always read; a change to the tracker, the
// sources or the resolver that alters them is a change to the API, to be
// made deliberately (go test -run TestAdminJSONGolden -update-admin) and
// with every client.
func TestAdminJSONGolden(t *testing.T) {
	cet := time.FixedZone("CET", 3600)
	t0 := time.Date(2026, 3, 4, 5, 6, 7, 123456789, cet)
	src := registry.SourceStatus{Synced: true, Services: 3, LastError: "consul down", LastErrorAt: t0, LastChange: t0.Add(time.Second)}
	full := api.ProxiesResponse{
		Ready: true, Serving: "consul", Services: 3, Error: "publish failed", Warnings: []string{"a warning"},
		Source: sourceStatus(src), MTLS: true,
		UnresolvedIntentions: []string{"labs -> emr"},
		Permissive:           []string{"scheduling"},
		Proxies: []api.Proxy{
			proxyRow(xds.ProxyStatus{ID: "emr-1", Service: "emr", Kind: "envoy", Peer: "10.0.0.1:5000", Transport: "delta",
				ConnectedAt: t0, Types: map[string]xds.TypeStatus{"CDS": {Sent: "v2", Acked: "v1", AckedAt: t0.Add(-time.Minute)}, "LDS": {Sent: "v3"}},
				LastNACK: &xds.NACK{TypeURL: "type.googleapis.com/envoy.config.cluster.v3.Cluster", Version: "v2", Message: "bad", At: t0},
				NACKs:    2, TraceID: "4bf92f3577b34da6a3ce929d0e0e4736"},
				map[string]string{"type.googleapis.com/envoy.config.cluster.v3.Cluster": "v2"},
				"spiffe://medmesh.local/ns/default/svc/emr"),
			proxyRow(xds.ProxyStatus{ID: "his-1", Types: map[string]xds.TypeStatus{}}, nil, ""),
			proxyRow(xds.ProxyStatus{ID: "nil-types"}, nil, ""),
		},
	}
	pol := api.PoliciesResponse{Source: "dir:/p", Resolved: true, Errors: []string{"e.yaml: bad"},
		Objects: objectStatuses([]policy.ObjectStatus{
			{Key: policy.Key{Kind: "MeshRoute", Namespace: "default", Name: "r"}, Service: "emr", Generation: 4, Source: "/p/r.yaml",
				Conditions: []metav1.Condition{
					{Type: "Accepted", Status: "False", ObservedGeneration: 4, LastTransitionTime: metav1.NewTime(t0),
						Reason: "Invalid", Message: "spec.x: bad"},
					{Type: "Invalid", Status: "True", LastTransitionTime: metav1.NewTime(t0.Add(time.Hour)),
						Reason: "Invalid", Message: "spec.x: bad"},
				}},
			{Key: policy.Key{Kind: "MeshAccess", Name: "nil-conds"}},
			{Key: policy.Key{Kind: "MeshAccess", Name: "empty-conds"}, Conditions: []metav1.Condition{}},
		})}
	for _, tc := range []struct {
		name string
		body any
	}{
		{"proxies", full},
		{"proxies-empty", api.ProxiesResponse{Source: sourceStatus(registry.SourceStatus{})}},
		{"policies", pol},
		{"policies-empty", api.PoliciesResponse{Objects: objectStatuses(nil)}},
		{"join-token", api.JoinTokenResponse{Token: "tok", Service: "emr", Namespace: "default", Expires: t0}},
		{"config", api.ConfigResponse{Node: "emr-1", Versions: map[string]string{"t": "v"},
			Resources: map[string][]json.RawMessage{"t": {json.RawMessage(`{"a":1}`)}}}},
		{"config-empty", api.ConfigResponse{Node: "x", Resources: map[string][]json.RawMessage{}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			enc := json.NewEncoder(&b)
			enc.SetIndent("", "  ") // as writeJSON
			if err := enc.Encode(tc.body); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", "admin", tc.name+".json")
			if *updateAdmin {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b.Bytes(), want) {
				t.Errorf("%s changed; the admin API's JSON is what clients read:\n--- got\n%s--- want (%s)\n%s", tc.name, b.Bytes(), path, want)
			}
		})
	}
}

// The admin API repeats the condition vocabulary so that clients need
// neither api/v1alpha1 nor Kubernetes; it must stay the same, and an
// object's standing must read the same through either type.
func TestAdminConditionsAgreeWithPolicy(t *testing.T) {
	for got, want := range map[string]string{
		api.ConditionAccepted: v1alpha1.ConditionAccepted,
		api.ConditionInvalid:  v1alpha1.ConditionInvalid,
		api.ConditionTrue:     string(metav1.ConditionTrue),
		api.ConditionFalse:    string(metav1.ConditionFalse),
	} {
		if got != want {
			t.Errorf("admin says %q, api/v1alpha1 and Kubernetes %q", got, want)
		}
	}
	key := policy.Key{Kind: "MeshRoute", Namespace: "default", Name: "r"}
	for _, conds := range [][]metav1.Condition{
		nil,
		{{Type: v1alpha1.ConditionAccepted, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonAccepted, Message: "in force"}},
		{{Type: v1alpha1.ConditionInvalid, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonInvalid, Message: "spec.x"},
			{Type: v1alpha1.ConditionAccepted, Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonInvalid, Message: "spec.x"}},
	} {
		in := policy.ObjectStatus{Key: key, Conditions: conds}
		out := objectStatus(&in)
		if out.Accepted() != in.Accepted() || out.Message() != in.Message() || out.Key.String() != in.Key.String() {
			t.Errorf("%v: admin says accepted=%t %q %q, policy accepted=%t %q %q", conds,
				out.Accepted(), out.Message(), out.Key, in.Accepted(), in.Message(), in.Key)
		}
	}
}
