package blockdiff

import "fmt"

// SignatureError is a signature that cannot be read: corrupt, truncated,
// foreign, or of an unsupported version. It wraps ErrSignature, and Err
// when there is an underlying cause (a decompression error, for example).
type SignatureError struct {
	// Part is "header", "chunk" or "trailer".
	Part string
	// Chunk is the index of the chunk (for a trailer: the number of
	// chunks before it).
	Chunk int64
	// Off is the disk offset of the chunk's first block (for a trailer:
	// the end of the range).
	Off int64
	// Pos is the byte offset of the part in the signature stream.
	Pos int64
	// Msg says what is wrong.
	Msg string
	// Err is the underlying cause, or nil.
	Err error
}

func (e *SignatureError) Error() string {
	s := "blockdiff: bad signature: "
	switch e.Part {
	case "chunk":
		s += fmt.Sprintf("chunk %d (disk offset %d) at byte %d: ", e.Chunk, e.Off, e.Pos)
	case "trailer":
		s += fmt.Sprintf("trailer (after %d chunks) at byte %d: ", e.Chunk, e.Pos)
	default:
		s += e.Part + ": "
	}
	s += e.Msg
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns ErrSignature and the cause, if any.
func (e *SignatureError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrSignature}
	}
	return []error{ErrSignature, e.Err}
}

// newSigEncoder returns a compressor for chunk bodies. Hashes do not
// compress; runs of zero blocks do, at any level, so the fastest is used.
