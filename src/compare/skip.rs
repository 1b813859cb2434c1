//! Why an answer pair was not compared: the `skipped_by_reason` names of the shadow's
//! figures.

/// Why an answer pair could not be compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// A request body over `shadow.max_body_bytes`: the copy was not sent.
    RequestTooLarge,
    /// A response body over the cap, on either side (before or after decoding).
    ResponseTooLarge,
    /// A content encoding banyan does not decode (zstd, compress, ...), or a body that
    /// does not decode.
    Encoding,
    /// The primary request failed before an answer, so there is nothing to compare with.
    NoPrimary,
    /// The route mirrors with `compare = false`: the answer is timed, not compared.
    NotCompared,
    /// A gRPC call whose client sent other than one message (client or bidi streaming):
    /// not mirrored.
    GrpcStreaming,
}

impl SkipReason {
    pub const ALL: [SkipReason; 6] = [
        SkipReason::RequestTooLarge,
        SkipReason::ResponseTooLarge,
        SkipReason::Encoding,
        SkipReason::NoPrimary,
        SkipReason::NotCompared,
        SkipReason::GrpcStreaming,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::RequestTooLarge => "request_body_over_cap",
            SkipReason::ResponseTooLarge => "response_body_over_cap",
            SkipReason::Encoding => "content_encoding",
            SkipReason::NoPrimary => "no_primary_answer",
            SkipReason::NotCompared => "compare_off",
            SkipReason::GrpcStreaming => "grpc_streaming_call",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}
