package bootstrap_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/grpc/credentials/tls/certprovider/pemfile"
	"google.golang.org/grpc/xds"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	"medmesh/api/wire"
	"medmesh/controlplane/bootstrap"
)

// parseEnvoy reads Envoy() output back the way Envoy does (YAML into the
// v3 Bootstrap proto, unknown fields rejected) and validates it again.
func parseEnvoy(t *testing.T, out []byte) *bootstrapv3.Bootstrap {
	t.Helper()
	js, err := yaml.YAMLToJSON(out)
	if err != nil {
		t.Fatalf("not YAML: %v\n%s", err, out)
	}
	b := &bootstrapv3.Bootstrap{}
	if err := protojson.Unmarshal(js, b); err != nil {
		t.Fatalf("not an Envoy bootstrap: %v\n%s", err, out)
	}
	if err := b.ValidateAll(); err != nil {
		t.Fatalf("ValidateAll: %v", err)
	}
	return b
}

func TestEnvoyBootstrap(t *testing.T) {
	out, err := bootstrap.Envoy(bootstrap.Options{
		XDSAddress: "controlplane.medmesh.internal:15010", NodeID: "emr-1", Service: "emr", Delta: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	b := parseEnvoy(t, out)

	// CONTRACT.md: node.id is the Consul service ID, node.cluster the name.
	if b.GetNode().GetId() != "emr-1" || b.GetNode().GetCluster() != "emr" {
		t.Errorf("node %v", b.GetNode())
	}
	if got := b.GetNode().GetMetadata().GetFields()[wire.NodeMetaProxyKind].GetStringValue(); got != "envoy" {
		t.Errorf("node metadata %s = %q, want envoy", wire.NodeMetaProxyKind, got)
	}
	// Envoy's admin API can change config and dump secrets: loopback only.
	if sa := b.GetAdmin().GetAddress().GetSocketAddress(); sa.GetAddress() != "127.0.0.1" || sa.GetPortValue() != 15901 {
		t.Errorf("admin on %s:%d, want 127.0.0.1:15901", sa.GetAddress(), sa.GetPortValue())
	}

	clusters := b.GetStaticResources().GetClusters()
	if len(clusters) != 1 {
		t.Fatalf("%d static clusters, want the xDS cluster only", len(clusters))
	}
	xc := clusters[0]
	if xc.GetType() != clusterv3.Cluster_STRICT_DNS {
		t.Errorf("xDS cluster type %v; a hostname needs DNS", xc.GetType())
	}
	sa := xc.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
	if sa.GetAddress() != "controlplane.medmesh.internal" || sa.GetPortValue() != 15010 {
		t.Errorf("xDS server %s:%d", sa.GetAddress(), sa.GetPortValue())
	}
	// xDS is gRPC: the cluster must speak HTTP/2.
	opts := &upstreamhttpv3.HttpProtocolOptions{}
	if a, ok := xc.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]; !ok {
		t.Error("xDS cluster has no HTTP/2 protocol options")
	} else if err := a.UnmarshalTo(opts); err != nil {
		t.Fatal(err)
	}
	// Without PINGs Envoy never notices a control plane that vanished
	// without closing the connection.
	ka := opts.GetExplicitHttpConfig().GetHttp2ProtocolOptions().GetConnectionKeepalive()
	if ka.GetInterval().AsDuration() <= 0 || ka.GetTimeout().AsDuration() <= 0 {
		t.Errorf("xDS cluster HTTP/2 keepalive %v; want an interval and a timeout", ka)
	}

	dr := b.GetDynamicResources()
	ads := dr.GetAdsConfig()
	if ads.GetApiType() != corev3.ApiConfigSource_DELTA_GRPC || ads.GetTransportApiVersion() != corev3.ApiVersion_V3 {
		t.Errorf("ads_config %v", ads)
	}
	if got := ads.GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName(); got != xc.GetName() {
		t.Errorf("ADS uses cluster %q, static cluster is %q", got, xc.GetName())
	}
	for what, cs := range map[string]*corev3.ConfigSource{"lds": dr.GetLdsConfig(), "cds": dr.GetCdsConfig()} {
		if cs.GetAds() == nil || cs.GetResourceApiVersion() != corev3.ApiVersion_V3 {
			t.Errorf("%s_config %v, want ADS v3", what, cs)
		}
	}
}

func TestEnvoyBootstrapAPIType(t *testing.T) {
	for _, tt := range []struct {
		delta bool
		want  corev3.ApiConfigSource_ApiType
	}{
		{true, corev3.ApiConfigSource_DELTA_GRPC},
		{false, corev3.ApiConfigSource_GRPC}, // state of the world
	} {
		out, err := bootstrap.Envoy(bootstrap.Options{XDSAddress: "127.0.0.1:15010", NodeID: "his-1", Service: "his", Delta: tt.delta, AdminPort: 19000})
		if err != nil {
			t.Fatal(err)
		}
		b := parseEnvoy(t, out)
		if got := b.GetDynamicResources().GetAdsConfig().GetApiType(); got != tt.want {
			t.Errorf("delta=%t: api_type %v, want %v", tt.delta, got, tt.want)
		}
		if got := b.GetAdmin().GetAddress().GetSocketAddress().GetPortValue(); got != 19000 {
			t.Errorf("admin port %d, want 19000", got)
		}
	}
}

func TestEnvoyBootstrapIPv6(t *testing.T) {
	out, err := bootstrap.Envoy(bootstrap.Options{XDSAddress: "[fd00::1]:15010", NodeID: "emr-1"})
	if err != nil {
		t.Fatal(err)
	}
	sa := parseEnvoy(t, out).GetStaticResources().GetClusters()[0].GetLoadAssignment().GetEndpoints()[0].
		GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
	if sa.GetAddress() != "fd00::1" || sa.GetPortValue() != 15010 {
		t.Errorf("xDS server %s:%d, want fd00::1:15010", sa.GetAddress(), sa.GetPortValue())
	}
}

func TestBootstrapOptionErrors(t *testing.T) {
	tests := []struct {
		name string
		o    bootstrap.Options
		want string
	}{
		{"no node id", bootstrap.Options{XDSAddress: "127.0.0.1:15010"}, "--node-id"},
		{"no port", bootstrap.Options{XDSAddress: "127.0.0.1", NodeID: "n"}, "--xds-address"},
		{"port zero", bootstrap.Options{XDSAddress: "127.0.0.1:0", NodeID: "n"}, "--xds-address"},
		{"port too large", bootstrap.Options{XDSAddress: "127.0.0.1:65536", NodeID: "n"}, "--xds-address"},
		{"port not a number", bootstrap.Options{XDSAddress: "127.0.0.1:xds", NodeID: "n"}, "--xds-address"},
		{"empty address", bootstrap.Options{NodeID: "n"}, "--xds-address"},
	}
	for _, tt := range tests {
		for kind, gen := range map[string]func(bootstrap.Options) ([]byte, error){"envoy": bootstrap.Envoy, "proxyless": bootstrap.Proxyless} {
			out, err := gen(tt.o)
			if err == nil {
				t.Errorf("%s %s: accepted:\n%s", kind, tt.name, out)
				continue
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("%s %s: error %q does not name %s", kind, tt.name, err, tt.want)
			}
		}
	}
}

func proxyless(t *testing.T, o bootstrap.Options) ([]byte, map[string]any) {
	t.Helper()
	out, err := bootstrap.Proxyless(o)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	return out, m
}

// get walks a decoded JSON document: string keys into objects, ints into
// arrays.
func get(t *testing.T, v any, path ...any) any {
	t.Helper()
	for _, p := range path {
		switch k := p.(type) {
		case string:
			obj, ok := v.(map[string]any)
			if !ok {
				t.Fatalf("%v: not an object at %q", path, k)
			}
			v = obj[k]
		case int:
			arr, ok := v.([]any)
			if !ok || k >= len(arr) {
				t.Fatalf("%v: no element %d", path, k)
			}
			v = arr[k]
		}
	}
	return v
}

func TestProxylessBootstrap(t *testing.T) {
	_, m := proxyless(t, bootstrap.Options{XDSAddress: "127.0.0.1:15010", NodeID: "nurse-station-7", Service: "nurse-station"})
	checks := []struct {
		path []any
		want any
	}{
		{[]any{"xds_servers", 0, "server_uri"}, "127.0.0.1:15010"},
		{[]any{"xds_servers", 0, "channel_creds", 0, "type"}, "insecure"},
		{[]any{"node", "id"}, "nurse-station-7"},
		{[]any{"node", "cluster"}, "nurse-station"},
		{[]any{"node", "metadata", wire.NodeMetaProxyKind}, "proxyless"},
		{[]any{"server_listener_resource_name_template"}, "medmesh/inbound/%s"},
	}
	for _, c := range checks {
		if got := get(t, m, c.path...); got != c.want {
			t.Errorf("%v = %v, want %v", c.path, got, c.want)
		}
	}
	// grpc-js-xds refuses a node without locality; an empty one will do
	// (integration's TestProxylessBootstrapAcceptedByGRPCJS runs its
	// validator).
	if _, ok := get(t, m, "node", "locality").(map[string]any); !ok {
		t.Errorf("node.locality = %v; grpc-js-xds requires the field", get(t, m, "node", "locality"))
	}
	var features []string
	for _, f := range get(t, m, "xds_servers", 0, "server_features").([]any) {
		features = append(features, f.(string))
	}
	// ignore_resource_deletion: a client keeps its last resources if the
	// control plane loses them, the last-known-good rule on the client.
	for _, want := range []string{"xds_v3", "ignore_resource_deletion"} {
		if !slices.Contains(features, want) {
			t.Errorf("server_features %v lack %s", features, want)
		}
	}
	if _, ok := m["certificate_providers"]; ok {
		t.Error("certificate_providers without --svid-dir: the paths would point nowhere")
	}

	// grpc-go fills the template with the address it serves on; the
	// translator must name the listener the same way.
	tmpl := get(t, m, "server_listener_resource_name_template").(string)
	if got, want := strings.ReplaceAll(tmpl, "%s", "10.1.0.11:9001"), wire.ProxylessServerListenerName("10.1.0.11", 9001); got != want {
		t.Errorf("grpc-go would ask for %q, the translator names %q", got, want)
	}
}

func TestProxylessBootstrapSVIDDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "svid")
	_, m := proxyless(t, bootstrap.Options{XDSAddress: "127.0.0.1:15010", NodeID: "emr-1", Service: "emr", SVIDDir: dir})
	p := get(t, m, "certificate_providers", bootstrap.CertProviderName)
	if got := get(t, p, "plugin_name"); got != pemfile.PluginName {
		t.Errorf("plugin_name %v, want %s", got, pemfile.PluginName)
	}
	for key, file := range map[string]string{
		"certificate_file":    bootstrap.SVIDCertFile,
		"private_key_file":    bootstrap.SVIDKeyFile,
		"ca_certificate_file": bootstrap.SVIDBundleFile,
	} {
		if got, want := get(t, p, "config", key), filepath.Join(dir, file); got != want {
			t.Errorf("%s = %v, want %s", key, got, want)
		}
	}
}

// grpc-go has no public bootstrap parser, but xds.NewGRPCServer with
// BootstrapContentsForTesting runs the real one (xds_servers, channel
// creds, node, certificate provider configs through the file_watcher
// plugin) and then insists on a server listener template. It creates an
// xDS client but does not connect until Serve.
func TestProxylessBootstrapAcceptedByGRPC(t *testing.T) {
	if os.Getenv("GRPC_XDS_BOOTSTRAP") != "" || os.Getenv("GRPC_XDS_BOOTSTRAP_CONFIG") != "" {
		// A rejected bootstrap falls back to these, which would hide it.
		t.Skip("GRPC_XDS_BOOTSTRAP(_CONFIG) is set in the environment")
	}
	accept := func(contents []byte) error {
		s, err := xds.NewGRPCServer(xds.BootstrapContentsForTesting(contents))
		if err != nil {
			return err
		}
		s.Stop()
		return nil
	}
	for _, dir := range []string{"", t.TempDir()} {
		out, _ := proxyless(t, bootstrap.Options{XDSAddress: "127.0.0.1:15010", NodeID: "emr-1", Service: "emr", SVIDDir: dir})
		if err := accept(out); err != nil {
			t.Errorf("svid-dir %q: grpc-go rejects the bootstrap: %v\n%s", dir, err, out)
		}
	}

	// Controls: the same check rejects what grpc-go would reject, so the
	// passes above mean something.
	_, m := proxyless(t, bootstrap.Options{XDSAddress: "127.0.0.1:15010", NodeID: "emr-1", SVIDDir: t.TempDir()})
	broken := map[string]func(map[string]any){
		"no xds_servers": func(m map[string]any) { delete(m, "xds_servers") },
		"bad refresh_interval": func(m map[string]any) {
			get(t, m, "certificate_providers", bootstrap.CertProviderName, "config").(map[string]any)["refresh_interval"] = "sixty"
		},
		"no server listener template": func(m map[string]any) { delete(m, "server_listener_resource_name_template") },
	}
	for name, breakIt := range broken {
		c := deepCopy(t, m)
		breakIt(c)
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		if err := accept(b); err == nil {
			t.Errorf("%s: grpc-go accepted it; the acceptance check proves nothing", name)
		}
	}
}

func deepCopy(t *testing.T, m map[string]any) map[string]any {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}
