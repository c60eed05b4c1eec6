//go:build tools

// Package tools pins Jaeger's all-in-one, built into bin/jaeger by
// `make tools-jaeger`. A separate module keeps Jaeger's large dependency
// graph out of medmesh's own go.mod.
package tools

import _ "github.com/jaegertracing/jaeger/cmd/jaeger"
