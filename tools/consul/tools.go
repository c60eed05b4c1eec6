//go:build tools

// Package tools pins the Consul version that `make tools` builds from its Go
// module. It lives in its own module so the main go.mod stays small.
package tools

import _ "github.com/hashicorp/consul"
