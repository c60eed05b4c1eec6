package policy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"medmesh/api/v1alpha1"
	"medmesh/internal/latest"
)

// Dir is a policy source backed by a directory of YAML files (*.yaml,
// *.yml; several objects per file separated by ---). It polls, like the
// catalog file source: edge nodes often mount volumes where inotify is
// unreliable, and a one-second poll of a few files costs nothing.
//
// Decoding is strict: an unknown field (a typo such as `timout`) or a
// wrong type is an error naming the file, the object and the field. A
// file with an error keeps its previous content in force, so a bad edit
// never removes the policies that were working.
type Dir struct {
	Path     string
	Interval time.Duration
	Logger   *slog.Logger
	// Now stamps objects that carry no creationTimestamp (files rarely
	// do) with when they were first seen, so "the oldest wins" means the
	// same as with Kubernetes. Nil: time.Now.
	Now func() time.Time
}

// Name identifies the source in logs and status.
func (d *Dir) Name() string { return "dir:" + d.Path }

// fileState is the last good content of one file.
type fileState struct {
	data    []byte
	objects []object
	err     string
}

type object struct {
	kind  string
	route *v1alpha1.MeshRoute
	dest  *v1alpha1.MeshDestination
	acc   *v1alpha1.MeshAccess
}

func (o *object) meta() *metav1.ObjectMeta {
	switch {
	case o.route != nil:
		return &o.route.ObjectMeta
	case o.dest != nil:
		return &o.dest.ObjectMeta
	}
	return &o.acc.ObjectMeta
}

// Run reads the directory now and whenever a file changes.
func (d *Dir) Run(ctx context.Context, out chan *Set) error {
	log := d.Logger
	if log == nil {
		log = slog.Default()
	}
	interval := d.Interval
	if interval <= 0 {
		interval = time.Second
	}
	now := d.Now
	if now == nil {
		now = time.Now
	}
	files := map[string]*fileState{}
	firstSeen := map[Key]metav1.Time{}
	first, lastDirErr := true, ""
	for {
		changed, err := d.scan(files, log)
		dirErr := ""
		if err != nil {
			dirErr = err.Error()
			if dirErr != lastDirErr {
				log.Error("policy directory unreadable; keeping the policies last read", "err", err)
			}
		}
		if changed || first || dirErr != lastDirErr {
			set := assemble(files, firstSeen, now)
			if dirErr != "" {
				set.Errors = append(set.Errors, dirErr)
			}
			latest.Send(out, set)
			first, lastDirErr = false, dirErr
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}

// scan re-reads changed files; it reports whether anything changed. An
// unreadable directory keeps every file's last content.
func (d *Dir) scan(files map[string]*fileState, log *slog.Logger) (bool, error) {
	entries, err := os.ReadDir(d.Path)
	if err != nil {
		return false, fmt.Errorf("%s: %w; keeping the policies last read", d.Path, err)
	}
	changed := false
	present := map[string]bool{}
	for _, e := range entries {
		ext := filepath.Ext(e.Name())
		if e.IsDir() || (ext != ".yaml" && ext != ".yml") || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		path := filepath.Join(d.Path, e.Name())
		present[path] = true
		data, err := os.ReadFile(path)
		if err != nil {
			continue // e.g. removed between ReadDir and ReadFile
		}
		st, ok := files[path]
		if ok && bytes.Equal(st.data, data) {
			continue
		}
		if !ok {
			st = &fileState{}
			files[path] = st
		}
		changed = true
		st.data = data
		objs, err := decodeFile(path, data)
		if err != nil {
			st.err = err.Error() + "; the file's previous content stays in force"
			log.Error("policy file rejected; its previous content stays in force", "file", path, "err", err)
			continue
		}
		st.objects, st.err = objs, ""
		log.Info("policy file loaded", "file", path, "objects", len(objs))
	}
	for path := range files {
		if !present[path] {
			// A deleted file's policies go: deleting is how an operator
			// withdraws a policy in file mode.
			delete(files, path)
			changed = true
			log.Info("policy file removed", "file", path)
		}
	}
	return changed, nil
}

// assemble builds the Set from every file's last good objects. An object
// defined twice (same kind, namespace and name) is kept from the first
// file by name and the other is reported.
func assemble(files map[string]*fileState, firstSeen map[Key]metav1.Time, now func() time.Time) *Set {
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	set := &Set{}
	seen := map[Key]string{}
	live := map[Key]bool{}
	for _, p := range paths {
		st := files[p]
		if st.err != "" {
			set.Errors = append(set.Errors, st.err)
		}
		for _, o := range st.objects {
			m := o.meta()
			k := keyOf(o.kind, m)
			if other, dup := seen[k]; dup {
				set.Errors = append(set.Errors, fmt.Sprintf("%s: %s is also defined in %s; this copy is ignored", p, k, other))
				continue
			}
			seen[k], live[k] = p, true
			if m.CreationTimestamp.IsZero() {
				t, ok := firstSeen[k]
				if !ok {
					t = metav1.NewTime(now())
					firstSeen[k] = t
				}
				m.CreationTimestamp = t
			}
			switch {
			case o.route != nil:
				set.Routes = append(set.Routes, *o.route)
			case o.dest != nil:
				set.Destinations = append(set.Destinations, *o.dest)
			default:
				set.Access = append(set.Access, *o.acc)
			}
		}
	}
	for k := range firstSeen {
		if !live[k] {
			delete(firstSeen, k)
		}
	}
	return set
}

// decodeFile strictly decodes every document of a file. The objects are
// stamped with the file in SourceAnnotation and given the default
// namespace when they name none.
func decodeFile(path string, data []byte) ([]object, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var out []object
	var errs []error
	for i := 1; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: document %d: %w", path, i, err))
			break
		}
		if len(bytes.TrimSpace(doc)) == 0 || isComments(doc) {
			continue
		}
		o, err := decodeDoc(doc)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: document %d%s: %w", path, i, describe(doc), err))
			continue
		}
		m := o.meta()
		if m.Namespace == "" {
			m.Namespace = "default"
		}
		if m.Annotations == nil {
			m.Annotations = map[string]string{}
		}
		m.Annotations[SourceAnnotation] = path
		out = append(out, o)
	}
	return out, errors.Join(errs...)
}

func isComments(doc []byte) bool {
	for _, line := range strings.Split(string(doc), "\n") {
		if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "#") {
			return false
		}
	}
	return true
}

// describe names the object a document holds, as far as it can be read,
// for error messages.
func describe(doc []byte) string {
	var head struct {
		Kind     string `json:"kind"`
		Metadata struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
	}
	if yaml.Unmarshal(doc, &head) != nil || head.Metadata.Name == "" {
		return ""
	}
	ns := head.Metadata.Namespace
	if ns == "" {
		ns = "default"
	}
	return fmt.Sprintf(" (%s %s/%s)", head.Kind, ns, head.Metadata.Name)
}

func decodeDoc(doc []byte) (object, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return object{}, err
	}
	if tm.APIVersion != v1alpha1.GroupVersion.String() {
		return object{}, fmt.Errorf("apiVersion: %q: want %s", tm.APIVersion, v1alpha1.GroupVersion)
	}
	o := object{kind: tm.Kind}
	var target any
	switch tm.Kind {
	case v1alpha1.KindMeshRoute:
		o.route = &v1alpha1.MeshRoute{}
		target = o.route
	case v1alpha1.KindMeshDestination:
		o.dest = &v1alpha1.MeshDestination{}
		target = o.dest
	case v1alpha1.KindMeshAccess:
		o.acc = &v1alpha1.MeshAccess{}
		target = o.acc
	default:
		return object{}, fmt.Errorf("kind: %q: want MeshRoute, MeshDestination or MeshAccess", tm.Kind)
	}
	// UnmarshalStrict refuses unknown and duplicate fields.
	if err := yaml.UnmarshalStrict(doc, target); err != nil {
		return object{}, err
	}
	if o.meta().Name == "" {
		return object{}, errors.New("metadata.name: required")
	}
	return o, nil
}

// ParseSet strictly decodes the policy objects in YAML data (several
// documents), as the directory source does for one file.
func ParseSet(name string, data []byte) (*Set, error) {
	objs, err := decodeFile(name, data)
	if err != nil {
		return nil, err
	}
	set := &Set{}
	for _, o := range objs {
		switch {
		case o.route != nil:
			set.Routes = append(set.Routes, *o.route)
		case o.dest != nil:
			set.Destinations = append(set.Destinations, *o.dest)
		default:
			set.Access = append(set.Access, *o.acc)
		}
	}
	return set, nil
}
