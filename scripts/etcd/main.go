// Command etcd is the stock etcd server, built from the published
// go.etcd.io/etcd/server/v3 module (see go.mod) by scripts/k8s-binaries.sh.
// It exists only because etcd's own main package lives in the root module
// go.etcd.io/etcd/v3, whose releases are not all published as Go modules.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
