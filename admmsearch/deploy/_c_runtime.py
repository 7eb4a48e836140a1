"""The C99 text that ``c_export`` writes around a model's data: the layer descriptor, the
portable decoder, the walker that reads a layer's weights straight from its stream, and the
kernels that :mod:`admmsearch.c_network` calls.

No dynamic memory and no dependency beyond ``<stdint.h>`` (and ``<math.h>`` for sigmoid, tanh and
BatchNorm). Bit fields are read least significant bit first, as ``docs/FORMAT.md`` says; a
uniform level decodes as the float32 product ``scale * (float)level``, which C99 compilers
evaluate in float32 on targets with ``FLT_EVAL_METHOD == 0`` (x86-64, ARM; do not build with
``-ffast-math``).

The kernels compute PyTorch's operations in float32 with a different order of summation:
a convolution or linear layer starts its output at the bias and, for each nonzero weight the
walker yields (in order of position in the weight), adds ``weight * input`` to every output it
touches. So a layer is read once per inference, in the order it is stored, and needs no buffer
of its own: the output buffer is the accumulator.
"""

from __future__ import annotations

__all__ = ["DECODER", "HARNESS", "HEADER_TYPES", "KERNELS", "MATH_KERNELS", "WALKER"]

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

/* The width-bit field at bit pos of a stream, LSB first (width <= 32). */
static uint32_t admm_read(const uint8_t *s, uint64_t pos, unsigned width)
{
    const uint8_t *p = s + (pos >> 3);
    unsigned shift = (unsigned)(pos & 7u), got;
    uint32_t v;
    if (!width)
        return 0u;
    v = (uint32_t)(*p++ >> shift);
    for (got = 8u - shift; got < width; got += 8u)
        v |= (uint32_t)*p++ << got;
    return width < 32u ? v & ((UINT32_C(1) << width) - 1u) : v;
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
        *out = scale * (float)(int32_t)(zero + (int64_t)L->stride * (int64_t)code);
    } else {
        b.u = code;
        *out = b.f;
    }
    return 0;
}

/* The value table: the uniform scale and zero point; returns the bit position after it. */
static uint64_t admm_table(const admm_layer *L, float *scale, int64_t *zero)
{
    admm_bits b;
    *scale = 0.0f;
    *zero = 0;
    if (L->coding == ADMM_CODEBOOK)
        return (uint64_t)32u * L->codebook_size;
    if (L->coding != ADMM_UNIFORM)
        return 0u;
    b.u = admm_read(L->stream, 0u, 32u);
    *scale = b.f;
    if (L->zero_stored) {
        *zero = (int64_t)(int32_t)admm_read(L->stream, 32u, 32u);
        return 64u;
    }
    *zero = -(int64_t)(((uint64_t)L->stride * ((UINT64_C(1) << L->width) - 1u)) / 2u);
    return 32u;
}

int admm_decode_layer(const admm_layer *L, float *out)
{
    uint64_t values;
    float scale;
    int64_t zero;
    uint64_t pos = admm_table(L, &scale, &zero);
    uint32_t i;
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

WALKER = r"""
/* Walks a weight's nonzero entries in order of position: straight from a compressed layer's
   stream (L), or from a float array (f, L = 0). Nothing is decoded ahead. */
typedef struct {
    const admm_layer *L;
    const float *f;
    uint32_t numel, at;     /* entries; the next entry (dense, f) or stored value (gap, csr) */
    uint64_t index;         /* bit position: the next gap code, or the csr row pointers */
    uint64_t values;        /* bit position: the next value code (gap), or the first one */
    uint64_t columns;       /* csr: bit position of the column indices */
    uint32_t left, cursor;  /* gap: codes left, position after the last one read */
    uint32_t row, end;      /* csr: rows begun, the end of the current row's values */
    float scale;
    int64_t zero;
} admm_walk;

static int admm_walk_floats(admm_walk *w, const float *f, uint32_t numel)
{
    w->L = 0;
    w->f = f;
    w->numel = numel;
    w->at = 0u;
    return 0;
}

#if !ADMM_DECODE_LAYERS
static int admm_walk_layer(admm_walk *w, const admm_layer *L)
{
    uint64_t pos = admm_table(L, &w->scale, &w->zero);
    admm_walk_floats(w, 0, L->numel);
    w->L = L;
    w->index = w->values = pos;
    w->cursor = w->row = w->end = 0u;
    if (L->encoding == ADMM_GAP) {
        w->left = L->nonzeros + L->fillers;
        w->values = pos + (uint64_t)L->gap_bits * w->left;
    } else if (L->encoding == ADMM_CSR) {
        w->columns = pos + (uint64_t)(L->rows + 1u) * L->pointer_bits;
        w->values = w->columns + (uint64_t)L->nonzeros * L->column_bits;
        return admm_read(L->stream, pos, L->pointer_bits) ? -1 : 0;
    }
    return 0;
}
#endif

static int admm_next_dense(admm_walk *w, uint32_t *pos, float *value)
{
    const admm_layer *L = w->L;
    for (; w->at < L->numel; ++w->at) {
        uint32_t code = admm_read(L->stream, w->values + (uint64_t)w->at * L->width, L->width);
        if (admm_value(L, code, w->scale, w->zero, value))
            return -1;
        if (*value != 0.0f) {
            *pos = w->at++;
            return 1;
        }
    }
    return 0;
}

static int admm_next_gap(admm_walk *w, uint32_t *pos, float *value)
{
    const admm_layer *L = w->L;
    uint32_t span = (1u << L->gap_bits) - 1u, gap = 0u;
    while (!gap) {
        if (!w->left)
            return 0;
        if (w->cursor > L->numel)
            return -1;
        gap = admm_read(L->stream, w->index, L->gap_bits);
        w->index += L->gap_bits;
        --w->left;
        w->cursor += gap ? gap : span;
    }
    if (w->cursor > L->numel)
        return -1;
    *pos = w->cursor - 1u;
    if (admm_value(L, admm_read(L->stream, w->values, L->width), w->scale, w->zero, value))
        return -1;
    w->values += L->width;
    return 1;
}

static int admm_next_csr(admm_walk *w, uint32_t *pos, float *value)
{
    const admm_layer *L = w->L;
    uint32_t col, code;
    while (w->at == w->end) {
        if (w->row == L->rows)
            return 0;
        ++w->row;
        w->end = admm_read(L->stream, w->index + (uint64_t)w->row * L->pointer_bits,
                           L->pointer_bits);
        if (w->end < w->at || w->end > L->nonzeros)
            return -1;
    }
    col = admm_read(L->stream, w->columns + (uint64_t)w->at * L->column_bits, L->column_bits);
    code = admm_read(L->stream, w->values + (uint64_t)w->at * L->width, L->width);
    if (col >= L->cols || admm_value(L, code, w->scale, w->zero, value))
        return -1;
    *pos = (w->row - 1u) * L->cols + col;
    ++w->at;
    return 1;
}

/* The next nonzero weight: returns 1 and sets its position and value, 0 at the end, -1 if the
   stream is inconsistent. */
static int admm_next(admm_walk *w, uint32_t *pos, float *value)
{
    if (!w->L) {
        for (; w->at < w->numel; ++w->at)
            if (w->f[w->at] != 0.0f) {
                *pos = w->at;
                *value = w->f[w->at++];
                return 1;
            }
        return 0;
    }
    if (w->L->encoding == ADMM_DENSE)
        return admm_next_dense(w, pos, value);
    if (w->L->encoding == ADMM_GAP)
        return admm_next_gap(w, pos, value);
    return admm_next_csr(w, pos, value);
}
"""

#: The kernels by function name, in an order where each follows what it calls; c_network
#: includes the ones its network calls.
KERNELS = {
    "admm_span": r"""
/* Outputs first .. (returned) last whose input index o * stride + offset lies in [0, size). */
static int admm_span(int offset, int stride, int size, int outputs, int *first)
{
    int last = size - 1 - offset < 0 ? -1 : (size - 1 - offset) / stride;
    *first = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
    return last < outputs - 1 ? last : outputs - 1;
}
""",
    "admm_conv_tap": r"""
typedef struct {
    int c, h, w;        /* input channels, height, width (1-D: h = 1) */
    int oc, oh, ow;     /* output channels, height, width */
    int kh, kw, sh, sw; /* kernel, stride */
    int dh, dw, ph, pw; /* dilation, padding before */
    int groups;
} admm_conv_shape;

/* Adds the weight v at position p of the (oc, c / groups, kh, kw) weight to every output. */
static void admm_conv_tap(const admm_conv_shape *g, const float *in, float *out, uint32_t p,
                          float v)
{
    int taps = g->kh * g->kw, per = g->c / g->groups * taps;
    int o = (int)(p / (uint32_t)per), r = (int)(p % (uint32_t)per);
    int ci = o / (g->oc / g->groups) * (g->c / g->groups) + r / taps;
    int dy = r % taps / g->kw * g->dh - g->ph, dx = r % g->kw * g->dw - g->pw;
    int y0, x0, y, x;
    int y1 = admm_span(dy, g->sh, g->h, g->oh, &y0), x1 = admm_span(dx, g->sw, g->w, g->ow, &x0);
    for (y = y0; y <= y1; ++y) {
        const float *src = in + ((long)ci * g->h + (long)y * g->sh + dy) * g->w + dx;
        float *dst = out + ((long)o * g->oh + y) * g->ow;
        for (x = x0; x <= x1; ++x)
            dst[x] += v * src[(long)x * g->sw];
    }
}
""",
    "admm_conv": r"""
/* Convolution (1-D or 2-D, any stride, dilation, padding, groups) from a walked weight. */
static int admm_conv(const admm_conv_shape *g, admm_walk *wt, const float *bias,
                     const float *in, float *out)
{
    long plane = (long)g->oh * g->ow, i;
    int o, more;
    uint32_t p;
    float v;
    for (o = 0; o < g->oc; ++o)
        for (i = 0; i < plane; ++i)
            out[o * plane + i] = bias ? bias[o] : 0.0f;
    while ((more = admm_next(wt, &p, &v)) > 0)
        admm_conv_tap(g, in, out, p, v);
    return more;
}
""",
    "admm_linear": r"""
/* y = x W^T + b on rows of n_in entries, from a walked (n_out, n_in) weight. */
static int admm_linear(long rows, int n_in, int n_out, admm_walk *wt, const float *bias,
                       const float *in, float *out)
{
    long r;
    int o, more;
    uint32_t p;
    float v;
    for (r = 0; r < rows; ++r)
        for (o = 0; o < n_out; ++o)
            out[r * n_out + o] = bias ? bias[o] : 0.0f;
    while ((more = admm_next(wt, &p, &v)) > 0) {
        int row = (int)(p / (uint32_t)n_in), col = (int)(p % (uint32_t)n_in);
        for (r = 0; r < rows; ++r)
            out[r * n_out + row] += v * in[r * n_in + col];
    }
    return more;
}
""",
    "admm_pool": r"""
typedef struct {
    int c, h, w, oh, ow;        /* channels, input and output height and width */
    int kh, kw, sh, sw, ph, pw; /* kernel, stride, padding */
    int count_pad;              /* average: divide by the whole window (1) or its inside (0) */
} admm_pool_shape;

/* Max (average = 0) or average (average = 1) pooling; padded positions never count as max. */
static void admm_pool(const admm_pool_shape *g, int average, const float *in, float *out)
{
    int c, y, x, i, j;
    for (c = 0; c < g->c; ++c)
        for (y = 0; y < g->oh; ++y)
            for (x = 0; x < g->ow; ++x) {
                float acc = 0.0f;
                int inside = 0;
                for (i = 0; i < g->kh; ++i)
                    for (j = 0; j < g->kw; ++j) {
                        int iy = y * g->sh - g->ph + i, ix = x * g->sw - g->pw + j;
                        float e;
                        if (iy < 0 || iy >= g->h || ix < 0 || ix >= g->w)
                            continue;
                        e = in[((long)c * g->h + iy) * g->w + ix];
                        acc = average ? acc + e : (!inside || e > acc ? e : acc);
                        ++inside;
                    }
                if (average)
                    acc /= (float)(g->count_pad ? g->kh * g->kw : inside);
                out[((long)c * g->oh + y) * g->ow + x] = acc;
            }
}
""",
    "admm_global_avg_pool": r"""
static void admm_global_avg_pool(const float *in, float *out, int c, long plane)
{
    int ch;
    long i;
    for (ch = 0; ch < c; ++ch) {
        float acc = 0.0f;
        for (i = 0; i < plane; ++i)
            acc += in[ch * plane + i];
        out[ch] = acc / (float)plane;
    }
}
""",
    "admm_relu": r"""
static void admm_relu(const float *in, float *out, long n)
{
    long i;
    for (i = 0; i < n; ++i)
        out[i] = in[i] > 0.0f ? in[i] : 0.0f;
}
""",
    "admm_relu6": r"""
static void admm_relu6(const float *in, float *out, long n)
{
    long i;
    for (i = 0; i < n; ++i) {
        float v = in[i] > 0.0f ? in[i] : 0.0f;
        out[i] = v < 6.0f ? v : 6.0f;
    }
}
""",
    "admm_sigmoid": r"""
static void admm_sigmoid(const float *in, float *out, long n)
{
    long i;
    for (i = 0; i < n; ++i)
        out[i] = 1.0f / (1.0f + expf(-in[i]));
}
""",
    "admm_tanh": r"""
static void admm_tanh(const float *in, float *out, long n)
{
    long i;
    for (i = 0; i < n; ++i)
        out[i] = tanhf(in[i]);
}
""",
    "admm_hardswish": r"""
static void admm_hardswish(const float *in, float *out, long n)
{
    long i;
    for (i = 0; i < n; ++i) {
        float r = in[i] + 3.0f;
        r = r > 0.0f ? r : 0.0f;
        out[i] = in[i] * (r < 6.0f ? r : 6.0f) / 6.0f;
    }
}
""",
    "admm_add": r"""
static void admm_add(const float *a, const float *b, float *out, long n)
{
    long i;
    for (i = 0; i < n; ++i)
        out[i] = a[i] + b[i];
}
""",
    "admm_copy": r"""
static void admm_copy(const float *in, float *out, long n)
{
    long i;
    for (i = 0; i < n; ++i)
        out[i] = in[i];
}
""",
    "admm_batch_norm": r"""
/* (x - mean) / sqrt(var + eps) * weight + bias per channel (weight, bias: 0 when absent). */
static void admm_batch_norm(const float *in, float *out, int c, long plane, const float *mean,
                            const float *var, const float *weight, const float *bias,
                            float eps)
{
    int ch;
    long i;
    for (ch = 0; ch < c; ++ch) {
        float s = 1.0f / sqrtf(var[ch] + eps), t;
        if (weight)
            s *= weight[ch];
        t = (bias ? bias[ch] : 0.0f) - mean[ch] * s;
        for (i = 0; i < plane; ++i)
            out[ch * plane + i] = in[ch * plane + i] * s + t;
    }
}
""",
}
#: Kernels that call <math.h>.
MATH_KERNELS = ("admm_sigmoid", "admm_tanh", "admm_batch_norm")

HARNESS = r"""/* Generated by admmsearch: runs admm_predict on raw samples and prints the accuracy
   as `admmsearch predict` prints it for the same samples, so a build for a board can be
   checked against the packed model.

   Samples file: one record per sample, ADMM_INPUT_SIZE float32 (the raw input, channels
   first) then its int32 label, little-endian (export-model --samples DATA.npz writes one).
   Build and run on a computer:
       cc -std=c99 -O2 -o admm_main main.c admm_model.c -lm
       ./admm_main samples.bin [logits.bin]
   The optional second file receives every sample's ADMM_NUM_CLASSES logits (float32). */
#include <stdio.h>
#include "admm_model.h"

int main(int argc, char **argv)
{
    static float sample[ADMM_INPUT_SIZE];
    float logits[ADMM_NUM_CLASSES];
    int32_t label;
    long n = 0, correct = 0;
    FILE *in, *out = 0;
    if (argc < 2) {
        fprintf(stderr, "usage: %s SAMPLES.bin [LOGITS.bin]\n", argv[0]);
        return 2;
    }
    if (!(in = fopen(argv[1], "rb")) || (argc > 2 && !(out = fopen(argv[2], "wb")))) {
        perror(argc > 2 && in ? argv[2] : argv[1]);
        return 2;
    }
    while (fread(sample, sizeof(float), ADMM_INPUT_SIZE, in) == ADMM_INPUT_SIZE
           && fread(&label, sizeof label, 1, in) == 1) {
        int predicted = admm_predict(sample, logits);
        if (predicted < 0) {
            fprintf(stderr, "sample %ld: a layer's stream is inconsistent\n", n);
            return 1;
        }
        if (out && fwrite(logits, sizeof(float), ADMM_NUM_CLASSES, out) != ADMM_NUM_CLASSES)
            return 1;
        correct += predicted == label;
        ++n;
    }
    printf("%s: accuracy %.4f (%ld of %ld)\n", argv[1], n ? (double)correct / n : 0.0,
           correct, n);
    return (out && fclose(out)) || fclose(in);
}
"""
