module metalearn.dev/examples/go

go 1.19
