package phi

import (
	"context"
	"crypto/sha256"
	"log/slog"
	"os"
	"time"

	"sync/atomic"

	"medmesh/sidecar/classify"
)

type ruleSet struct {
	classifier *classify.Classifier
	callers    classify.CallerPolicy
}

// Rules holds the classifier and caller policy in force; a reload swaps
// them atomically, so a request sees one consistent set.
type Rules struct {
	p atomic.Pointer[ruleSet]
}

// NewRules starts with the built-in rules and no caller caps.
func NewRules() *Rules {
	r := &Rules{}
	r.Set(&classify.Config{Callers: classify.CallerPolicy{Default: classify.Critical}})
	return r
}

// Set installs a parsed configuration.
func (r *Rules) Set(cfg *classify.Config) {
	r.p.Store(&ruleSet{classifier: classify.New(cfg.Rules), callers: cfg.Callers})
}

// Load reads path and installs it; on error the previous rules stay in
// force and the error (naming file and line) is returned.
func (r *Rules) Load(path string) error {
	cfg, err := classify.LoadFile(path)
	if err != nil {
		return err
	}
	r.Set(cfg)
	return nil
}

// Watch reloads path whenever its content changes, until ctx ends. It
// polls the content hash rather than using inotify: Kubernetes mounts
// ConfigMaps through symlink swaps that inotify watches on the file miss.
// A bad file is logged (naming file and line) and the rules in force stay.
func (r *Rules) Watch(ctx context.Context, path string, every time.Duration, log *slog.Logger) {
	last := fileHash(path)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		h := fileHash(path)
		if h == last {
			continue
		}
		last = h
		if err := r.Load(path); err != nil {
			log.Error("rules not reloaded; previous rules stay in force", "err", err)
			continue
		}
		log.Info("rules reloaded", "file", path)
	}
}

func fileHash(path string) [32]byte {
	b, err := os.ReadFile(path)
	if err != nil {
		return [32]byte{}
	}
	return sha256.Sum256(b)
}

func (r *Rules) current() *ruleSet { return r.p.Load() }
