package integration

import (
	"context"
	"fmt"
	"testing"

	"github.com/hashicorp/consul/api"
)

// TestProxylessReachesOnlyHealthyInstances: a grpc-go xDS client reaches
// only healthy instances, a failing check removes an instance and a
// passing one restores it, and each server gets its inbound listener.
func TestProxylessReachesOnlyHealthyInstances(t *testing.T) {
	consul := startConsul(t, true)
	c := consul.Client()
	cp := startControlPlane(t, consulSource(consul))

	meta := map[string]string{"medmesh-kind": "emr", "medmesh-protocol": "grpc"}
	status := map[string]string{"emr-1": api.HealthPassing, "emr-2": api.HealthPassing, "emr-3": api.HealthCritical}
	for _, id := range []string{"emr-1", "emr-2", "emr-3"} {
		port := freePort(t)
		startXDSServer(t, cp.xdsAddr(), "emr", id, port)
		register(t, c, "emr", id, port, meta, status[id])
	}
	cc := dialXDS(t, cp.xdsAddr(), "his-client-1", "emr")
	ctx := context.Background()

	eventually(t, "both healthy instances serve", func() error {
		seen, err := servedBy(ctx, cc, 20)
		if err != nil {
			return err
		}
		if seen["emr-1"] == 0 || seen["emr-2"] == 0 {
			return fmt.Errorf("served by %s", keys(seen))
		}
		return nil
	})
	seen, err := servedBy(ctx, cc, 50)
	if err != nil {
		t.Fatal(err)
	}
	if seen["emr-3"] != 0 {
		t.Fatalf("critical instance emr-3 received calls: %v", seen)
	}

	setHealth(t, c, "emr-1", api.HealthCritical)
	eventually(t, "emr-1 removed after its check failed", func() error {
		seen, err := servedBy(ctx, cc, 20)
		if err != nil {
			return err
		}
		if seen["emr-1"] != 0 || seen["emr-2"] != 20 {
			return fmt.Errorf("served by %s", keys(seen))
		}
		return nil
	})

	setHealth(t, c, "emr-1", api.HealthPassing)
	eventually(t, "emr-1 restored after its check passed", func() error {
		seen, err := servedBy(ctx, cc, 20)
		if err != nil {
			return err
		}
		if seen["emr-1"] == 0 {
			return fmt.Errorf("served by %s", keys(seen))
		}
		return nil
	})
}
