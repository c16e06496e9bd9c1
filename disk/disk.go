package disk

import "io"

// Source is a disk a run reads. It is never written. ReadAt may be called
// concurrently (the io.ReaderAt contract).
type Source interface {
	io.ReaderAt
	Size() int64
}

// Target is a disk a run makes identical to its source. It is read too:
// comparing and verifying need its bytes. ReadAt and WriteAt may be called
// concurrently on disjoint ranges.
type Target interface {
	io.ReaderAt
	io.WriterAt
	Size() int64
}
