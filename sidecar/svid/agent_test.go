package svid

import (
	"context"
	"os"
	"strings"
	"testing"
)

func TestNewRefusesIncompleteOptions(t *testing.T) {
	for _, o := range []Options{
		{NodeID: "emr-1/svid", Service: "emr"},                // nowhere to put the SVID
		{Service: "emr", Dir: t.TempDir()},                    // no node
		{NodeID: "emr-1/svid", WorkloadAPI: NewWorkloadAPI()}, // no service
	} {
		if _, err := New(o); err == nil || !strings.Contains(err.Error(), "--node-id, --service and --svid-dir or --workload-api are required") {
			t.Errorf("%+v: err %v", o, err)
		}
	}
}

// TestRunEndsWithContext: an agent whose context has ended returns at
// once, without having written anything.
func TestRunEndsWithContext(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Run(ctx, Options{XDSAddress: "127.0.0.1:1", NodeID: "emr-1/svid", Service: "emr", Dir: dir}); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("wrote %v", entries)
	}
}

func TestServeWorkloadAPIWantsAnAbsoluteSocketPath(t *testing.T) {
	for _, addr := range []string{"", "unix://", "relative.sock", "unix://relative.sock"} {
		if err := ServeWorkloadAPI(context.Background(), addr, NewWorkloadAPI()); err == nil || !strings.Contains(err.Error(), "want unix:///absolute/path") {
			t.Errorf("%q: err %v", addr, err)
		}
	}
}
