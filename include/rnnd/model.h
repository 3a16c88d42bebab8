/* A validated rnnd model file, read into memory (docs/model-format.md).
 *
 * The spec is public because the compute core, `rnnd inspect` and the API all read it; it is
 * immutable after rnnd_model_open() returns, but for one change: once its matrices are packed
 * (rnnd_model_shared_packs: the first rnnd_net_new), a bf16, f16 or int8 model's matrix
 * pointers become NULL. Weight pointers point into the file's bytes as read (or the model's
 * copies of them) and stay valid until the last rnnd_model_unref(). */
#ifndef RNND_MODEL_H
#define RNND_MODEL_H

#include <stddef.h>
#include <stdint.h>

#define RNND_MAX_LAYERS 64
#define RNND_MAX_DIM 65536
#define RNND_MAX_PERIODS 64 /* modules of a clockwork layer */
/* A clockwork layer's step counter t counts modulo 2^48 (docs/state.md, "The counter"). */
#define RNND_CLOCK_WRAP ((uint64_t)1 << 48)

enum rnnd_input_kind { RNND_INPUT_TOKENS = 0, RNND_INPUT_VECTORS = 1 };
/* mingru / minlstm (Feng et al. 2024): gates read only x, so W and Wb and no R, Rb.
 * slstm (Beck et al. 2024, xLSTM): R is block-diagonal, [4H, H/heads].
 * clockwork (Koutnik et al. 2014): modules of H / m units, each updated every T_k steps. */
enum rnnd_cell {
    RNND_CELL_RNN = 0,
    RNND_CELL_LSTM,
    RNND_CELL_GRU,
    RNND_CELL_JORDAN,
    RNND_CELL_MINGRU,
    RNND_CELL_MINLSTM,
    RNND_CELL_SLSTM,
    RNND_CELL_CLOCKWORK,
    RNND_CELL_COUNT
};
enum rnnd_direction { RNND_DIR_FORWARD = 0, RNND_DIR_REVERSE, RNND_DIR_BIDIRECTIONAL };
enum rnnd_head_norm { RNND_NORM_NONE = 0, RNND_NORM_SOFTMAX, RNND_NORM_LOG_SOFTMAX };
/* Whole-sequence pooling of the last layer's output before the head (infer only; sessions
 * keep per-step outputs). FINAL_STATE is PyTorch's h_n of the last layer: per direction, the
 * output of the last step that direction reads (a reverse direction's is at step 0). */
enum rnnd_seq_pool {
    RNND_POOL_NONE = 0,
    RNND_POOL_LAST,
    RNND_POOL_FINAL_STATE,
    RNND_POOL_MEAN,
    RNND_POOL_MAX,
    RNND_POOL_COUNT
};

/* A head layer (docs/model-format.md, "The head"): the head is a list of these applied in
 * order to each row, then the norm. The short form {"in_dim", "out_dim"} is one LINEAR. */
enum rnnd_head_op {
    RNND_HEAD_LINEAR = 0,
    RNND_HEAD_RELU,
    RNND_HEAD_TANH,
    RNND_HEAD_SIGMOID,
    RNND_HEAD_GELU,
    RNND_HEAD_GELU_TANH,
    RNND_HEAD_LAYERNORM,
    RNND_HEAD_OP_COUNT
};
#define RNND_MAX_HEAD_LAYERS 16

typedef struct rnnd_head_layer {
    int op;              /* enum rnnd_head_op */
    int in_dim, out_dim; /* out_dim == in_dim but for linear */
    int affine;          /* layernorm: has weight and bias */
    float eps;           /* layernorm: > 0 */
    const float *W;      /* linear [out_dim, in_dim]; layernorm with affine: [in_dim] */
    const float *b;      /* linear [out_dim]; layernorm with affine: [in_dim] */
    const float *W_s;    /* int8 model, linear: W's row scales [out_dim] (W holds q) */
} rnnd_head_layer;

/* The element type of the weight matrices the kernels read (docs/model-format.md,
 * "Half-size weights"): compute is float either way, a half weight widened exactly. I8:
 * "int8 weights", integers with a float scale per row and integer products. */
enum rnnd_weights { RNND_WEIGHTS_F32 = 0, RNND_WEIGHTS_BF16, RNND_WEIGHTS_F16, RNND_WEIGHTS_I8 };

/* How the products of a bf16 model are taken (docs/kernels.md, "bf16 compute"): F32 widens
 * each weight to float for the fma chain (the default); BF16 rounds the inputs to bf16 too
 * and takes pairs as VDPBF16PS does. Not part of the file: set by the program that runs the
 * model (rnnd_model_set_compute), for bf16 models only. */
enum rnnd_compute { RNND_COMPUTE_F32 = 0, RNND_COMPUTE_BF16 };

/* The ONNX recurrent activations. */
enum rnnd_act {
    RNND_ACT_SIGMOID = 0,
    RNND_ACT_TANH,
    RNND_ACT_RELU,
    RNND_ACT_HARDSIGMOID,
    RNND_ACT_LEAKYRELU,
    RNND_ACT_THRESHOLDEDRELU,
    RNND_ACT_SCALEDTANH,
    RNND_ACT_AFFINE,
    RNND_ACT_ELU,
    RNND_ACT_SOFTSIGN,
    RNND_ACT_SOFTPLUS,
    RNND_ACT_COUNT
};

typedef struct rnnd_activation {
    int kind;          /* enum rnnd_act */
    float alpha, beta; /* defaults already filled in by the loader */
} rnnd_activation;

/* Weights of one direction of one layer, row-major, pointing into the model's bytes. */
typedef struct rnnd_dir_weights {
    const float *W;    /* [G*H, in_dim] */
    const float *R;    /* [G*H, out_dim]; slstm [4H, H/heads]; NULL for mingru / minlstm */
    const float *Wb;   /* [G*H] */
    const float *Rb;   /* [G*H]; NULL for mingru / minlstm */
    const float *P;    /* [3*H] peepholes i, o, f; NULL unless peepholes */
    const float *proj; /* [proj_size, H]; NULL unless proj_size > 0 */
    const float *V;    /* [output_size, H]; jordan only */
    const float *Vb;   /* [output_size]; jordan only */
    const float *D;    /* [H, in_dim]; NULL unless depth_gate */
    const float *Dc;   /* [H]; depth_gate only */
    const float *Dl;   /* [H]; depth_gate only */
    const float *Db;   /* [H]; depth_gate only */
    /* int8 models only (else NULL): the row scales of W, R, proj, V and D, [rows] each; the
     * matrices themselves then hold the integers q (-127..127) as floats */
    const float *W_s, *R_s, *proj_s, *V_s, *D_s;
} rnnd_dir_weights;

typedef struct rnnd_layer_spec {
    int cell;           /* enum rnnd_cell */
    int direction;      /* enum rnnd_direction */
    int num_directions; /* 1 or 2 */
    int hidden;         /* H */
    int gates;          /* G: rows of W/R are G*H */
    int in_dim;         /* columns of W */
    int out_dim;        /* per direction: size of h (the recurrent state and the output) */
    int n_act;          /* activations per direction */
    rnnd_activation act[2][3];
    int has_clip;
    float clip;
    int input_forget; /* lstm */
    int peepholes;    /* lstm */
    int forget_gate;  /* lstm: 0 = 1997 LSTM */
    int proj_size;    /* lstm: 0 = none */
    /* lstm (Yao et al. 2015): c also takes d * the new c of layer l-1, an lstm of the same
     * H without projection; forward only, l >= 1 */
    int depth_gate;
    int linear_before_reset;       /* gru */
    int output_size;               /* jordan */
    int n_periods;                 /* clockwork: m modules of hidden / m units; 0 otherwise */
    int periods[RNND_MAX_PERIODS]; /* clockwork: T_1 < ... < T_m, module k is units
                                     * k*H/m .. (k+1)*H/m - 1 */
    int heads;                     /* slstm: K; unit u's recurrent row reads h[k*d, (k+1)*d),
                             * d = hidden / K, k = u / d */
    int exp_forget;                /* slstm: 1 "exp" (log f = pre_f), 0 "sigmoid" */
    rnnd_dir_weights w[2];
} rnnd_layer_spec;

typedef struct rnnd_model_spec {
    /* enum rnnd_weights. When not F32, every matrix the kernels read (layer W, R, proj, V and
     * head_W) holds values exactly representable in that type (rounded to nearest even at
     * load, or widened from a half tensor), in memory the model owns; everything else (the
     * embedding, biases, peepholes) is float as stored. I8: each matrix holds its integers
     * q as floats and the *_s pointers its row scales (docs/model-format.md, "int8
     * weights"), also in memory the model owns. */
    int weights;
    int compute;    /* enum rnnd_compute; RNND_COMPUTE_F32 unless rnnd_model_set_compute said */
    int input_kind; /* enum rnnd_input_kind */
    int vocab_size; /* tokens: number of ids */
    int input_dim;  /* tokens: embedding_dim; vectors: dim */
    const float *embedding; /* [vocab_size, input_dim] for tokens */
    int n_layers;
    rnnd_layer_spec layers[RNND_MAX_LAYERS];
    int has_head;
    int head_in, head_out; /* the width the head reads and the width it gives */
    int head_norm;         /* enum rnnd_head_norm */
    int head_short;        /* the file's short form: one linear, tensors head.weight/bias */
    int head_n;            /* 1 to RNND_MAX_HEAD_LAYERS when has_head */
    rnnd_head_layer head_layers[RNND_MAX_HEAD_LAYERS];
    int pool;           /* enum rnnd_seq_pool: infer gives one row per sequence when set */
    int n_vocab;        /* 0 or vocab_size */
    char **vocab;       /* n_vocab NUL-terminated strings (owned by the model) */
    char tokenizer[16]; /* "", "char" or "byte" */
    char name[128];     /* from the architecture's "name", may be "" */
} rnnd_model_spec;

typedef struct rnnd_model rnnd_model;

/* Read and validate PATH (a FIFO or device is refused without waiting on it). On failure
 * returns a negative rnnd_status, *out stays NULL and ERR holds one line "PATH: KEY: reason".
 * The new model has one reference. */
int rnnd_model_open(const char *path, rnnd_model **out, char *err, size_t errlen);

/* The same for the file open at FD (which stays the caller's), named LABEL in errors. It
 * must be a regular file (fstat); its bytes from offset 0 are read. A caller that must know
 * which file it loads opens it itself (the models folder: registry.c) and hands it here. */
int rnnd_model_read_fd(int fd, const char *label, rnnd_model **out, char *err, size_t errlen);

/* Validate an in-memory file image (copied; used by fuzzers and tests). LABEL names it in
 * errors. */
int rnnd_model_from_buffer(const void *data, size_t len, const char *label, rnnd_model **out,
                           char *err, size_t errlen);

/* A model for ARCH_JSON with weights uniform in [-SCALE, SCALE) from SEED, through the same
 * validation as a file (for benchmarks). */
int rnnd_model_random(const char *arch_json, unsigned seed, float scale, rnnd_model **out,
                      char *err, size_t errlen);

rnnd_model *rnnd_model_ref(rnnd_model *m);
void rnnd_model_unref(rnnd_model *m); /* NULL is a no-op; frees on the last reference */

const rnnd_model_spec *rnnd_model_get_spec(const rnnd_model *m);

/* The state digest (64 lowercase hex chars + NUL; docs/state.md, "The digest"): SHA-256 of
 * the architecture and weight values a session's state depends on, not of names, vocabulary
 * text or storage. Equal digests: a state of one model means the same in the other. */
const char *rnnd_model_digest(const rnnd_model *m);

/* Lowercase hex SHA-256 of the whole file: identifies the exact file (reloads use it). */
const char *rnnd_model_file_digest(const rnnd_model *m);

#define RNND_VERIFY_MAX_LENGTHS 8

/* What rnnd-convert measured when it ran the file and its source on the same inputs
 * (__metadata__.verification, docs/model-format.md). Not part of the digest. */
typedef struct rnnd_verification {
    char source[32];  /* "module", "torchscript", "onnx" */
    double tolerance; /* |rnnd - src| <= tolerance * max(1, |src|) was required */
    double max_abs_error;
    double max_rel_error;
    int lengths[RNND_VERIFY_MAX_LENGTHS];
    int n_lengths;
    int batch;
    char digest[65];         /* the model digest checked; "" when the record names none */
    char weights_checked[8]; /* "f32" for a bf16 / f16 file checked before rounding, or "" */
    char norm_checked[16];   /* the head norm checked when --norm changed it after, or "" */
    /* the extra passes, each 0 when the record does not name it (an older converter, or a
     * pass that does not apply to the model) */
    int vocab_checked;         /* distinct token ids the check fed */
    int initial_state_checked; /* 1: also run from random initial states */
    int long_length;           /* a pass of long_batch sequences of long_length steps */
    int long_batch;
    double scaled_checked; /* a pass with the inputs scaled by this factor */
} rnnd_verification;

/* The file's verification record, or NULL when it has none (converted with --no-verify, from
 * a native spec, or by an older converter). Valid while M is referenced. */
const rnnd_verification *rnnd_model_verification(const rnnd_model *m);

/* 1 when M's record shows a passed check of this very model: the record names M's digest and
 * its max rel error is within its tolerance. Else 0, with the reason in WHY (a record can be
 * written by hand: this ties it to the weights, it does not sign them). */
int rnnd_model_verified(const rnnd_model *m, char *why, size_t whylen);

/* The raw architecture JSON text from the file header. */
const char *rnnd_model_architecture_json(const rnnd_model *m);

/* Derived sizes. */
size_t rnnd_model_param_count(const rnnd_model *m);
int rnnd_model_output_dim(const rnnd_model *m);      /* per step: head out or last layer out */
size_t rnnd_model_state_floats(const rnnd_model *m); /* per session, see rnn.h for the layout */
int rnnd_model_is_stateful(const rnnd_model *m);     /* every layer forward-only */

/* The packed weights every net of M shares: built by BUILD (from M's spec) on the first call,
 * then returned as they are; released with RELEASE when M goes. Takes M's packing lock.
 * A bfloat16, float16 or int8 model keeps its matrices only packed from then on: its float
 * copy is freed and the spec's matrix pointers (W, R, proj, V, D, a head linear's weight,
 * their row scales) become NULL. Returns 0 with *OUT set, or BUILD's status. */
/* Choose how M's products are taken (enum rnnd_compute) before its first net packs them.
 * RNND_ERR_INVALID for an unknown COMPUTE, for RNND_COMPUTE_BF16 on a model whose weights
 * are not bf16, or for a change after the matrices were packed (setting the same mode again
 * is fine). */
int rnnd_model_set_compute(rnnd_model *m, int compute);

int rnnd_model_shared_packs(rnnd_model *m, int (*build)(const rnnd_model_spec *s, void **out),
                            void (*release)(void *), void **out);

const char *rnnd_act_name(int kind);
const char *rnnd_cell_name(int cell);
/* mingru or minlstm: gates that read only the input (no R, Rb; the state is h alone). */
int rnnd_cell_is_min(int cell);
/* Floats of a layer direction's cell state after h: lstm c [hidden]; slstm c, n, m [hidden]
 * each; none for the others. */
size_t rnnd_layer_cell_floats(const rnnd_layer_spec *L);
/* Floats of one direction's state besides h: the cell floats above, and for clockwork the
 * counter t as two floats (t mod 2^24, t / 2^24: both exact integers). */
size_t rnnd_layer_extra_state(const rnnd_layer_spec *L);
/* A clockwork counter from / to its two state floats (anything not a whole number in
 * [0, 2^24) reads as 0). */
uint64_t rnnd_clock_get(const float *st);
void rnnd_clock_put(float *st, uint64_t t);
const char *rnnd_direction_name(int dir);
const char *rnnd_weights_name(int weights); /* "f32", "bf16", "f16", "int8" */
const char *rnnd_pool_name(int pool);
/* "linear", "relu", "tanh", "sigmoid", "gelu", "gelu_tanh", "layernorm" */
const char *rnnd_head_op_name(int op); /* "none", "last", "final_state", "mean", "max" */

#endif
