// Command etcd is etcd's own main, built from its Go module so that
// envtest has a real etcd behind its kube-apiserver.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
