package integration

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"medmesh/controlplane/bootstrap"
)

// jsBootstrapCheck runs grpc-js-xds's own bootstrap validator (the first
// thing every grpc-js xDS channel and XdsServer runs) on contents.
func jsBootstrapCheck(t *testing.T, contents []byte) (ok bool, reason string) {
	t.Helper()
	node, modules, scripts := nodeEnv(t)
	file := filepath.Join(t.TempDir(), "bootstrap.json")
	if err := os.WriteFile(file, contents, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(node, filepath.Join(scripts, "bootstrap-check.js"))
	cmd.Env = append(os.Environ(), "GRPC_XDS_BOOTSTRAP="+file, "NODE_PATH="+modules)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("bootstrap-check.js: %v\n%s", err, out)
	}
	var res struct {
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("bootstrap-check.js printed %q: %v", out, err)
	}
	return res.OK, res.Error
}

// TestProxylessBootstrapAcceptedByGRPCJS: the unchanged output of
// `medmesh bootstrap --proxyless`, with and without an SVID directory,
// passes grpc-js-xds's validator (grpc-go's parser is run by
// controlplane/bootstrap's TestProxylessBootstrapAcceptedByGRPC). The
// controls show the check rejects what grpc-js rejects: a node without
// locality was the reason Node services could not use medmesh.
func TestProxylessBootstrapAcceptedByGRPCJS(t *testing.T) {
	for _, dir := range []string{"", t.TempDir()} {
		out, err := bootstrap.Proxyless(bootstrap.Options{XDSAddress: "127.0.0.1:15010", NodeID: "his-1", Service: "his", SVIDDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		if ok, reason := jsBootstrapCheck(t, out); !ok {
			t.Errorf("svid-dir %q: grpc-js-xds rejects the bootstrap: %s\n%s", dir, reason, out)
		}
	}

	out, err := bootstrap.Proxyless(bootstrap.Options{XDSAddress: "127.0.0.1:15010", NodeID: "his-1", Service: "his", SVIDDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		breakIt func(m map[string]any)
		reason  string
	}{
		"no node locality": {func(m map[string]any) { delete(m["node"].(map[string]any), "locality") }, "locality field missing"},
		"no channel creds": {func(m map[string]any) {
			m["xds_servers"].([]any)[0].(map[string]any)["channel_creds"] = []any{map[string]any{"type": "tls"}}
		}, "channel_creds"},
		"bad refresh_interval": {func(m map[string]any) {
			m["certificate_providers"].(map[string]any)[bootstrap.CertProviderName].(map[string]any)["config"].(map[string]any)["refresh_interval"] = 60
		}, "refresh_interval"},
	} {
		var m map[string]any
		if err := json.Unmarshal(out, &m); err != nil {
			t.Fatal(err)
		}
		tc.breakIt(m)
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if ok, reason := jsBootstrapCheck(t, b); ok || !strings.Contains(reason, tc.reason) {
			t.Errorf("%s: accepted=%t (%s); want it rejected naming %s: the acceptance check proves nothing", name, ok, reason, tc.reason)
		}
	}
}
