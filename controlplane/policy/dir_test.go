package policy_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"medmesh/controlplane/policy"
)

const goodRoute = `apiVersion: policy.medmesh.io/v1alpha1
kind: MeshRoute
metadata: {name: emr-canary}
spec:
  service: emr
  rules:
  - destinations: [{subset: {version: v2}}]
---
apiVersion: policy.medmesh.io/v1alpha1
kind: MeshAccess
metadata: {name: his-reads, namespace: clinical}
spec:
  service: emr
  action: Allow
  from: [{service: his}]
`

func TestParseSetStrict(t *testing.T) {
	_, err := policy.ParseSet("emr.yaml", []byte(strings.Replace(goodRoute, "rules:", "rulez:", 1)))
	if err == nil || !strings.Contains(err.Error(), "emr.yaml") || !strings.Contains(err.Error(), "MeshRoute default/emr-canary") ||
		!strings.Contains(err.Error(), "rulez") {
		t.Fatalf("unknown field: %v; want an error naming the file, the object and the field", err)
	}
	for _, bad := range []string{
		"apiVersion: policy.medmesh.io/v2\nkind: MeshRoute\nmetadata: {name: x}\n",
		"apiVersion: policy.medmesh.io/v1alpha1\nkind: VirtualService\nmetadata: {name: x}\n",
		"apiVersion: policy.medmesh.io/v1alpha1\nkind: MeshRoute\nmetadata: {}\nspec: {service: emr}\n",
		"apiVersion: policy.medmesh.io/v1alpha1\nkind: MeshRoute\nmetadata: {name: x}\nspec: {service: emr, rules: 3}\n",
	} {
		if _, err := policy.ParseSet("f.yaml", []byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
	set, err := policy.ParseSet("emr.yaml", []byte(goodRoute))
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Routes) != 1 || len(set.Access) != 1 || set.Routes[0].Namespace != "default" || set.Access[0].Namespace != "clinical" {
		t.Fatalf("parsed %+v", set)
	}
}

// next waits for the source's next set (the source sends on every change).
func next(t *testing.T, ch chan *policy.Set, want func(*policy.Set) bool) *policy.Set {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case s := <-ch:
			if want(s) {
				return s
			}
		case <-deadline:
			t.Fatal("the expected policy set never came")
		}
	}
}

// TestDirSource: files are read and re-read on change; a bad edit keeps
// the file's previous objects (and is reported); a second file with the
// same object is reported; removing a file withdraws its policies; files
// without a creationTimestamp keep their first-seen time.
func TestDirSource(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) {
		t.Helper()
		// Write then rename, as editors and ConfigMap mounts do, so the
		// poller never sees half a file.
		tmp := filepath.Join(dir, "."+name+".tmp")
		if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	write("emr.yaml", goodRoute)
	write("notes.txt", "not a policy")
	tick := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	src := &policy.Dir{Path: dir, Interval: 10 * time.Millisecond, Now: func() time.Time { tick = tick.Add(time.Minute); return tick }}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := make(chan *policy.Set, 1)
	go src.Run(ctx, ch)

	first := next(t, ch, func(s *policy.Set) bool { return len(s.Routes) == 1 })
	created := first.Routes[0].CreationTimestamp
	if created.IsZero() || first.Routes[0].Annotations[policy.SourceAnnotation] != filepath.Join(dir, "emr.yaml") {
		t.Fatalf("route meta %+v: want a first-seen creationTimestamp and the source file", first.Routes[0].ObjectMeta)
	}

	write("emr.yaml", strings.Replace(goodRoute, "destinations:", "destinationz:", 1))
	s := next(t, ch, func(s *policy.Set) bool { return len(s.Errors) > 0 })
	if len(s.Routes) != 1 || len(s.Access) != 1 || !strings.Contains(s.Errors[0], "destinationz") ||
		!strings.Contains(s.Errors[0], "previous content stays in force") {
		t.Fatalf("after a bad edit: %d routes, %d access, errors %q; want the previous objects kept and the error named",
			len(s.Routes), len(s.Access), s.Errors)
	}
	if !s.Routes[0].CreationTimestamp.Equal(&created) {
		t.Fatal("first-seen time changed")
	}

	write("copy.yaml", goodRoute)
	write("emr.yaml", goodRoute)
	s = next(t, ch, func(s *policy.Set) bool {
		// Both objects of the file are defined twice.
		return len(s.Errors) == 2 && strings.Contains(s.Errors[0], "also defined") && strings.Contains(s.Errors[1], "also defined")
	})
	if len(s.Routes) != 1 {
		t.Fatalf("duplicate object counted twice: %d routes", len(s.Routes))
	}

	os.Remove(filepath.Join(dir, "emr.yaml"))
	os.Remove(filepath.Join(dir, "copy.yaml"))
	next(t, ch, func(s *policy.Set) bool { return len(s.Routes) == 0 && len(s.Access) == 0 && len(s.Errors) == 0 })
}
