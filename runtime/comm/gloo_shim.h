// The C ABI of libmoreh_gloo, the only code that sees Gloo: collectives between worker processes over TCP.
// libtorch_cpu exports its own, different Gloo, so Debian's libgloo lives behind this ABI in a library that
// moreh loads with dlopen(RTLD_DEEPBIND) (runtime/comm/gloo_library.h); no C++ type or exception crosses it.
//
// A context is one rank of a full mesh of TCP connections. Every call returns a moreh_gloo_status and, on
// failure, fills the caller's moreh_gloo_error (which may be null). After any failure but
// MOREH_GLOO_INVALID the context's connections are closed, so its peers fail at once rather than at their
// bound, and every later call on it fails: Gloo cannot realign ranks after an abandoned operation.
//
// Collectives first meet: each rank sends a 32-byte description of its collective to every peer and waits
// for theirs. So a rank that does not arrive is named (MOREH_GLOO_TIMEOUT with error->peer), every waiting
// rank times out on it by its own bound, and ranks that issued different collectives fail with
// MOREH_GLOO_MISMATCH instead of feeding Gloo's streams lengths they do not expect. Then Gloo's algorithm
// runs (ring all_reduce, ring all_gatherv, binomial broadcast). reduce_scatter is a ring on Gloo's unbound
// buffers (Gloo 0.5 has only a bound-buffer, power-of-two-friendly ReduceScatterHalvingDoubling).
//
// Calls on one context run one at a time, except moreh_gloo_abort (any thread, any time).
#pragma once
#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define MOREH_GLOO_API __attribute__((visibility("default")))
#else
#define MOREH_GLOO_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define MOREH_GLOO_ABI_VERSION 1

typedef enum moreh_gloo_status {
  MOREH_GLOO_OK = 0,
  MOREH_GLOO_ERROR = 1,     // Gloo failed: a peer closed its connection (a dead process), an I/O error
  MOREH_GLOO_TIMEOUT = 2,   // the bound ran out (a peer did not arrive, or did not finish)
  MOREH_GLOO_INVALID = 3,   // bad arguments or an unsupported type / op; nothing was sent
  MOREH_GLOO_ABORTED = 4,   // moreh_gloo_abort() was called
  MOREH_GLOO_MISMATCH = 5,  // the ranks issued different collectives, or a message of another size / type
} moreh_gloo_status;

// Element types (moreh's DataType; bool moves as uint8).
typedef enum moreh_gloo_type {
  MOREH_GLOO_FLOAT32 = 0,
  MOREH_GLOO_FLOAT64 = 1,
  MOREH_GLOO_BFLOAT16 = 2,
  MOREH_GLOO_FLOAT16 = 3,
  MOREH_GLOO_INT64 = 4,
  MOREH_GLOO_INT32 = 5,
  MOREH_GLOO_UINT8 = 6,
} moreh_gloo_type;

// avg is the sum divided by the ranks (truncating toward zero for integers). bfloat16 and float16 reduce
// in float and round at each step of the ring.
typedef enum moreh_gloo_op {
  MOREH_GLOO_SUM = 0,
  MOREH_GLOO_AVG = 1,
  MOREH_GLOO_MAX = 2,
  MOREH_GLOO_MIN = 3,
  MOREH_GLOO_PROD = 4,
} moreh_gloo_op;

typedef struct moreh_gloo_error {
  int peer;              // the rank the failed call was waiting for, -1 when not known
  char message[1024];    // Gloo's text and what the shim knows, NUL-terminated
} moreh_gloo_error;

// The key-value store the ranks rendezvous through (the control plane's). Each callback returns 0, or
// MOREH_GLOO_TIMEOUT / another nonzero status with a NUL-terminated message in error[error_size].
typedef struct moreh_gloo_store {
  void* user;
  int (*set)(void* user, const char* key, const void* data, size_t size, char* error, size_t error_size);
  // Waits at most timeout_ms for `key`, then hands its bytes to put(sink, ...) and returns 0.
  int (*get)(void* user, const char* key, int64_t timeout_ms, void (*put)(void* sink, const void* data, size_t size),
             void* sink, char* error, size_t error_size);
} moreh_gloo_store;

typedef struct moreh_gloo_context moreh_gloo_context;

MOREH_GLOO_API int moreh_gloo_abi_version(void);
// GLOO_VERSION of the Gloo the shim was built against (major * 10000 + minor * 100 + patch).
MOREH_GLOO_API int moreh_gloo_version(void);
// The file that the shim's Gloo calls resolve to (dladdr): Debian's libgloo, never libtorch_cpu.
MOREH_GLOO_API const char* moreh_gloo_library_file(void);

// Rank `rank` of `size`: listens on `hostname` (an address or name of this machine, e.g. "127.0.0.1"),
// publishes its address through `store` and connects to every peer, all within timeout_ms. Keys written:
// "rank_<r>" and "<r>", so each context needs a store (or key prefix) of its own.
MOREH_GLOO_API int moreh_gloo_connect(int rank, int size, const char* hostname, int64_t timeout_ms,
                                      const moreh_gloo_store* store, moreh_gloo_context** out,
                                      moreh_gloo_error* error);
// Gives pending sends up to the connect timeout to be received (none once the context failed), then closes.
MOREH_GLOO_API void moreh_gloo_destroy(moreh_gloo_context* context);
// Fails the call in progress (and every later one) with MOREH_GLOO_ABORTED and `reason`, and closes the
// connections so the peers fail too. From any thread.
MOREH_GLOO_API void moreh_gloo_abort(moreh_gloo_context* context, const char* reason);
MOREH_GLOO_API int moreh_gloo_rank(const moreh_gloo_context* context);
MOREH_GLOO_API int moreh_gloo_size(const moreh_gloo_context* context);

// The collectives; counts are elements of `type`, the layouts those of runtime/comm/communicator.h
// (send == recv, or the rank's slice of it, is in place). Each call is bounded by timeout_ms in all.
MOREH_GLOO_API int moreh_gloo_all_reduce(moreh_gloo_context* context, const void* send, void* recv, uint64_t count,
                                         int type, int op, int64_t timeout_ms, moreh_gloo_error* error);
// send[sum(counts)] -> recv[counts[rank]]; counts has size() entries.
MOREH_GLOO_API int moreh_gloo_reduce_scatter(moreh_gloo_context* context, const void* send, void* recv,
                                             const uint64_t* counts, int type, int op, int64_t timeout_ms,
                                             moreh_gloo_error* error);
// send[counts[rank]] -> recv[sum(counts)], slices in rank order.
MOREH_GLOO_API int moreh_gloo_all_gatherv(moreh_gloo_context* context, const void* send, void* recv,
                                          const uint64_t* counts, int type, int64_t timeout_ms,
                                          moreh_gloo_error* error);
MOREH_GLOO_API int moreh_gloo_broadcast(moreh_gloo_context* context, const void* send, void* recv, uint64_t count,
                                        int type, int root, int64_t timeout_ms, moreh_gloo_error* error);
MOREH_GLOO_API int moreh_gloo_barrier(moreh_gloo_context* context, int64_t timeout_ms, moreh_gloo_error* error);
// Point to point, matched per (source, destination): the k-th send from a to b meets b's k-th recv from a.
// send copies the data and returns (eager: it does not wait for the recv); recv waits at most timeout_ms
// and fails with MOREH_GLOO_MISMATCH when the message is not `count` elements of `type`.
MOREH_GLOO_API int moreh_gloo_send(moreh_gloo_context* context, int peer, const void* data, uint64_t count, int type,
                                   int64_t timeout_ms, moreh_gloo_error* error);
MOREH_GLOO_API int moreh_gloo_recv(moreh_gloo_context* context, int peer, void* data, uint64_t count, int type,
                                   int64_t timeout_ms, moreh_gloo_error* error);

#ifdef __cplusplus
}  // extern "C"
#endif
