// Command ticketkeys-layoutprobe prints the layout row resty.ticketkeys relies on (as JSON), from the
// headers of a configured nginx source tree: an OpenResty line's nginx-headers/ directory made by
// scripts/openresty-build.sh, any tree where ./configure has run, or (-debian) Debian's nginx-dev
// source configured once under the cache.
//
//	ticketkeys-layoutprobe $(scripts/openresty-build.sh 1.27.1)/nginx-headers
//	ticketkeys-layoutprobe -debian
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/nginx/layoutprobe"
)

func main() {
	debian := flag.Bool("debian", false, "probe Debian's packaged nginx (nginx-dev), configured under the cache")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: ticketkeys-layoutprobe [-debian] [TREE...]   (TREE: a configured nginx tree with src/ and objs/)")
		flag.PrintDefaults()
	}
	flag.Parse()
	trees := flag.Args()
	ctx := context.Background()
	if *debian {
		cache := os.Getenv("TICKETKEYS_CACHE")
		if cache == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				fail(err)
			}
			cache = filepath.Join(home, ".cache", "ticketkeys")
		}
		tree, err := layoutprobe.DebianTree(ctx, cache)
		if err != nil {
			fail(err)
		}
		trees = append(trees, tree)
	}
	if len(trees) == 0 {
		flag.Usage()
		os.Exit(2)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	for _, tree := range trees {
		row, err := layoutprobe.Probe(ctx, tree)
		if err != nil {
			fail(err)
		}
		if err := enc.Encode(row); err != nil {
			fail(err)
		}
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "ticketkeys-layoutprobe:", err)
	os.Exit(1)
}
