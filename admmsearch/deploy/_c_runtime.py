"""The C99 text that ``c_export`` writes around a model's data: the layer descriptor, the
portable decoder, and the reference layers of the inference functions.

No dynamic memory and no dependency beyond ``<stdint.h>``. Bit fields are read least
significant bit first, as ``docs/FORMAT.md`` says; a uniform level decodes as the float32
product ``scale * (float)level``, which C99 compilers evaluate in float32 on targets with
``FLT_EVAL_METHOD == 0`` (x86-64, ARM; do not build with ``-ffast-math``).
"""

from __future__ import annotations

__all__ = ["DECODER", "HEADER_TYPES", "LAYERS"]

HEADER_TYPES = r"""#include <stdint.h>

enum { ADMM_DENSE = 1, ADMM_GAP = 2, ADMM_CSR = 3 };
enum { ADMM_VALUES_RAW = 0, ADMM_CODEBOOK = 1, ADMM_UNIFORM = 2 };

/* One compressed layer: its stream's bytes exactly as in the .admm payload, and the header
   fields needed to read them (docs/FORMAT.md). */
typedef struct {
    const char *key;          /* state_dict key, e.g. "conv1.weight" */
    uint32_t numel;           /* entries of the decoded weight */
    uint32_t rows, cols;      /* CSR view: shape[0] and the other dimensions flattened */
    uint8_t encoding;         /* ADMM_DENSE, ADMM_GAP or ADMM_CSR */
    uint8_t coding;           /* ADMM_VALUES_RAW, ADMM_CODEBOOK or ADMM_UNIFORM */
    uint8_t width;            /* bits per value code */
    uint8_t gap_bits;         /* gap: bits per gap code */
    uint8_t pointer_bits;     /* csr: bits per row pointer */
    uint8_t column_bits;      /* csr: bits per column index */
    uint8_t zero_stored;      /* uniform: the zero point follows the scale */
    uint32_t codebook_size;   /* codebook: float32 entries */
    uint32_t stride;          /* uniform: level step between consecutive codes */
    uint32_t nonzeros;        /* gap, csr: stored values */
    uint32_t fillers;         /* gap: filler codes */
    const uint8_t *stream;
    uint32_t stream_bytes;
} admm_layer;

/* Any other tensor (biases, buffers, layers left uncompressed), raw little-endian bytes. */
typedef struct {
    const char *key;
    const void *data;
    uint32_t bytes;
} admm_tensor;

/* Expand a layer into out[0 .. numel): returns 0, or -1 when the stream is inconsistent. */
int admm_decode_layer(const admm_layer *layer, float *out);
"""

DECODER = r"""
typedef union { uint32_t u; float f; } admm_bits;

static uint32_t admm_read(const uint8_t *s, uint64_t pos, unsigned width)
{
    uint32_t v = 0u;
    unsigned i;
    for (i = 0u; i < width; ++i, ++pos)
        v |= (uint32_t)((s[pos >> 3] >> (unsigned)(pos & 7u)) & 1u) << i;
    return v;
}

static int admm_value(const admm_layer *L, uint32_t code, float scale, int64_t zero, float *out)
{
    admm_bits b;
    if (L->coding == ADMM_CODEBOOK) {
        if (code >= L->codebook_size)
            return -1;
        b.u = admm_read(L->stream, (uint64_t)code * 32u, 32u);
        *out = b.f;
    } else if (L->coding == ADMM_UNIFORM) {
        *out = scale * (float)(zero + (int64_t)L->stride * (int64_t)code);
    } else {
        b.u = code;
        *out = b.f;
    }
    return 0;
}

int admm_decode_layer(const admm_layer *L, float *out)
{
    uint64_t pos = 0u, values;
    float scale = 0.0f;
    int64_t zero = 0;
    uint32_t i;
    if (L->coding == ADMM_CODEBOOK) {
        pos = (uint64_t)32u * L->codebook_size;
    } else if (L->coding == ADMM_UNIFORM) {
        admm_bits b;
        b.u = admm_read(L->stream, 0u, 32u);
        scale = b.f;
        pos = 32u;
        if (L->zero_stored) {
            zero = (int64_t)(int32_t)admm_read(L->stream, 32u, 32u);
            pos = 64u;
        } else {
            zero = -(int64_t)(((uint64_t)L->stride * ((UINT64_C(1) << L->width) - 1u)) / 2u);
        }
    }
    if (L->encoding == ADMM_DENSE) {
        for (i = 0u; i < L->numel; ++i, pos += L->width)
            if (admm_value(L, admm_read(L->stream, pos, L->width), scale, zero, &out[i]))
                return -1;
        return 0;
    }
    for (i = 0u; i < L->numel; ++i)
        out[i] = 0.0f;
    if (L->encoding == ADMM_GAP) {
        uint64_t index = pos, cursor = 0u;
        uint32_t span = (1u << L->gap_bits) - 1u, n, count = L->nonzeros + L->fillers;
        values = pos + (uint64_t)L->gap_bits * count;
        for (n = 0u; n < count; ++n, index += L->gap_bits) {
            uint32_t gap = admm_read(L->stream, index, L->gap_bits);
            cursor += gap ? gap : span;
            if (!gap)
                continue;
            if (cursor > L->numel)
                return -1;
            if (admm_value(L, admm_read(L->stream, values, L->width), scale, zero,
                           &out[cursor - 1u]))
                return -1;
            values += L->width;
        }
        return 0;
    }
    {
        uint64_t columns = pos + (uint64_t)(L->rows + 1u) * L->pointer_bits;
        uint32_t r, k, start = admm_read(L->stream, pos, L->pointer_bits), end;
        values = columns + (uint64_t)L->nonzeros * L->column_bits;
        for (r = 0u; r < L->rows; ++r, start = end) {
            end = admm_read(L->stream, pos + (uint64_t)(r + 1u) * L->pointer_bits,
                            L->pointer_bits);
            if (end < start || end > L->nonzeros)
                return -1;
            for (k = start; k < end; ++k) {
                uint32_t col = admm_read(L->stream, columns + (uint64_t)k * L->column_bits,
                                         L->column_bits);
                uint32_t code = admm_read(L->stream, values + (uint64_t)k * L->width, L->width);
                if (col >= L->cols || admm_value(L, code, scale, zero, &out[r * L->cols + col]))
                    return -1;
            }
        }
    }
    return 0;
}
"""

#: The reference layers, by function name; c_export includes the ones a network calls.
LAYERS = {
    "admm_conv2d": r"""
static void admm_conv2d(const float *in, int c, int h, int w, const float *wt, const float *bias,
                        int oc, int k, int pad, float *out)
{
    int oh = h + 2 * pad - k + 1, ow = w + 2 * pad - k + 1, o, y, x, ci, ky, kx;
    for (o = 0; o < oc; ++o)
        for (y = 0; y < oh; ++y)
            for (x = 0; x < ow; ++x) {
                double acc = bias ? bias[o] : 0.0;
                for (ci = 0; ci < c; ++ci)
                    for (ky = 0; ky < k; ++ky)
                        for (kx = 0; kx < k; ++kx) {
                            int iy = y + ky - pad, ix = x + kx - pad;
                            if (iy >= 0 && iy < h && ix >= 0 && ix < w)
                                acc += (double)wt[((o * c + ci) * k + ky) * k + kx]
                                       * in[(ci * h + iy) * w + ix];
                        }
                out[(o * oh + y) * ow + x] = (float)acc;
            }
}
""",
    "admm_maxpool2": r"""
static void admm_maxpool2(const float *in, int c, int h, int w, float *out)
{
    int oh = h / 2, ow = w / 2, ci, y, x;
    for (ci = 0; ci < c; ++ci)
        for (y = 0; y < oh; ++y)
            for (x = 0; x < ow; ++x) {
                const float *p = &in[(ci * h + 2 * y) * w + 2 * x];
                float m = p[0];
                if (p[1] > m) m = p[1];
                if (p[w] > m) m = p[w];
                if (p[w + 1] > m) m = p[w + 1];
                out[(ci * oh + y) * ow + x] = m;
            }
}
""",
    "admm_linear": r"""
static void admm_linear(const float *in, int n_in, const float *wt, const float *bias,
                        int n_out, float *out)
{
    int o, i;
    for (o = 0; o < n_out; ++o) {
        double acc = bias ? bias[o] : 0.0;
        for (i = 0; i < n_in; ++i)
            acc += (double)wt[o * n_in + i] * in[i];
        out[o] = (float)acc;
    }
}
""",
    "admm_relu": r"""
static void admm_relu(float *x, int n)
{
    int i;
    for (i = 0; i < n; ++i)
        if (!(x[i] > 0.0f))
            x[i] = 0.0f;
}
""",
}
