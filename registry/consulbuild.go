package registry

import "slices"

// serviceBuilds keeps each service's part of the last catalog built, so
// that a change to one service rebuilds that service alone: parsing the
// meta of every instance of every service on each health change was most
// of the Consul source's own time per change (about 7 ms of 8 for 1,000
// instances on 2 cores).
//
// The source says which services changed (changed); a change to the
// imports from peered sites rebuilds every service (they are rare and
// can touch any).
type serviceBuilds struct {
	built   map[string]builtService
	changed map[string]bool
	all     bool // rebuild everything (imports changed)
}

type builtService struct {
	svc   *Service // nil: no instances
	warns []Warning
}

func newServiceBuilds() *serviceBuilds {
	return &serviceBuilds{built: map[string]builtService{}, changed: map[string]bool{}}
}

// touch marks a service's instances as changed since the last build.
func (b *serviceBuilds) touch(name string) { b.changed[name] = true }

// touchAll marks every service as changed.
func (b *serviceBuilds) touchAll() { b.all = true }

// build returns the catalog of local and imported instances, as
// BuildCatalog(imported + every local instance) would, and its warnings.
// The catalog shares unchanged services' instances with earlier ones:
// catalogs are never modified once built.
func (b *serviceBuilds) build(local map[string][]RawInstance, imported []RawInstance) (*Catalog, []Warning) {
	var importedBy map[string][]RawInstance
	if len(imported) > 0 {
		importedBy = map[string][]RawInstance{}
		for _, r := range imported {
			importedBy[r.ServiceName] = append(importedBy[r.ServiceName], r)
		}
	}
	names := make([]string, 0, len(local)+len(importedBy))
	for name, inst := range local {
		if len(inst) > 0 {
			names = append(names, name)
		}
	}
	for name := range importedBy {
		if len(local[name]) == 0 {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	keep := make(map[string]builtService, len(names))
	c := &Catalog{Services: make([]Service, 0, len(names))}
	var warns []Warning
	for _, name := range names {
		bs, ok := b.built[name]
		if !ok || b.all || b.changed[name] {
			one, w := BuildCatalog(append(append([]RawInstance(nil), local[name]...), importedBy[name]...))
			bs = builtService{warns: w}
			if len(one.Services) == 1 {
				bs.svc = &one.Services[0]
			}
		}
		keep[name] = bs
		warns = append(warns, bs.warns...)
		if bs.svc != nil {
			c.Services = append(c.Services, *bs.svc)
		}
	}
	b.built, b.all = keep, false
	clear(b.changed)
	return c, warns
}
