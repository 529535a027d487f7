/*
 * Host check of the tensor-core fast digest's layout (cuda/fast_rects.cu), no GPU needed: one
 * warp's tile of 16 random blocks is loaded as tc_load does, paired into A fragments as
 * tc_compute does, multiplied with the key image tc_bimg builds under mma.m16n8k32's fragment
 * layout (as CuTe's SM80_16x8x32_S32U8U8S32_TN traits define it), and each thread's columns
 * combined as the epilogue does; every block's inner sum must equal sum_j K_l[j] u_j. A swapped
 * register in the pairing makes it fail (tried). Exit 0: all equal.
 */
#include "fast_rects.cu"

#include <cstdio>
#include <random>

/* fast_rects.cu's host code calls these; the check never does. */
ws_err wsc_fail(ws_error *, ws_err code, const char *, ...) { return code; }
ws_err wsc_cuda(cudaError_t e, const char *, ws_error *) { return e == cudaSuccess ? WS_OK : WS_ERR_IO; }
int wsc_pointer_device(const void *) { return -1; }
ws_err wsc_use_device_of(const void *, int *, ws_error *) { return WS_ERR_ARG; }
wsc_device_state *wsc_state(ws_error *) { return nullptr; }
ws_err wsc_buf_reserve(wsc_buf *, size_t, ws_error *) { return WS_ERR_NOMEM; }

static uint8_t data[16 * 2048];
static struct ws_fastkey K;
static uint4 img[TC_BIMG];
static uint32_t byte_of(uint32_t w, int i) { return (w >> (8 * i)) & 0xff; }
int main() {
    const uint64_t seed = std::random_device{}();
    std::mt19937_64 rng(seed);
    for (int l = 0; l < 3; l++) for (unsigned j = 0; j < FB; j++) K.k[l][j] = (rng() & 0xffffffffu) | 1;
    for (auto &b : data) b = rng() & 0xff;
    tc_bimg(&K, img);
    // C[l][lane][4]
    int64_t C[3][32][4] = {};
    for (uint32_t S = 0; S < TC_STAGES; S++) {
        uint4 X[32][8];
        for (uint32_t lane = 0; lane < 32; lane++) {
            uint32_t g = lane >> 2, t = lane & 3;
            for (int c = 0; c < 4; c++) {
                memcpy(&X[lane][c], data + 2048 * g + 16 * t + 256 * S + 64 * c, 16);
                memcpy(&X[lane][4 + c], data + 2048 * (g + 8) + 16 * t + 256 * S + 64 * c, 16);
            }
        }
        for (int pr = 0; pr < 4; pr++) for (int l = 0; l < 3; l++) for (int h = 0; h < 2; h++) {
            uint32_t A[32][4], B[32][2];
            for (uint32_t lane = 0; lane < 32; lane++) {
                uint4 *x = X[lane]; uint4 b = img[((S * 3u + l) * 4u + pr) * 32u + lane];
                if (!h) { A[lane][0] = x[pr].x; A[lane][1] = x[4 + pr].x; A[lane][2] = x[pr].y; A[lane][3] = x[4 + pr].y; B[lane][0] = b.x; B[lane][1] = b.y; }
                else { A[lane][0] = x[pr].z; A[lane][1] = x[4 + pr].z; A[lane][2] = x[pr].w; A[lane][3] = x[4 + pr].w; B[lane][0] = b.z; B[lane][1] = b.w; }
            }
            // reconstruct matrices per CuTe: A: v=v0+4v1+8v2 -> m = g + 8 v1, k = 4t + v0 + 16 v2; reg = v/4 = v1 + 2 v2
            uint32_t Am[16][32], Bm[32][8];
            for (uint32_t lane = 0; lane < 32; lane++) {
                uint32_t g = lane >> 2, t = lane & 3;
                for (int v = 0; v < 16; v++) { int v0 = v & 3, v1 = (v >> 2) & 1, v2 = v >> 3;
                    Am[g + 8 * v1][4 * t + v0 + 16 * v2] = byte_of(A[lane][v / 4], v0); }
                for (int v = 0; v < 8; v++) { int v0 = v & 3, v1 = v >> 2;
                    Bm[4 * t + v0 + 16 * v1][g] = byte_of(B[lane][v / 4], v0); }
            }
            for (uint32_t lane = 0; lane < 32; lane++) {
                uint32_t g = lane >> 2, t = lane & 3;
                for (int e = 0; e < 4; e++) { int m = g + 8 * (e >> 1), n = 2 * t + (e & 1);
                    int64_t acc = 0; for (int k = 0; k < 32; k++) acc += Am[m][k] * Bm[k][n];
                    C[l][lane][e] += acc; }
            }
        }
    }
    int bad = 0;
    for (int l = 0; l < 3; l++) for (int row = 0; row < 16; row++) {
        unsigned __int128 want = 0, got = 0;
        for (unsigned j = 0; j < FB; j++) want += (unsigned __int128)K.k[l][j] * (data[2048 * row + 2 * j] | data[2048 * row + 2 * j + 1] << 8);
        for (uint32_t lane = 0; lane < 32; lane++) {
            uint32_t g = lane >> 2, t = lane & 3, sh = 8u * ((t >> 1) + 2u * (t & 1));
            if (C[l][lane][0] >= (1ll << 31) || C[l][lane][1] >= (1ll<<31)) bad++;
            if ((int)g == row) got += ((uint64_t)C[l][lane][0] << sh) + ((uint64_t)C[l][lane][1] << (sh + 8));
            if ((int)g + 8 == row) got += ((uint64_t)C[l][lane][2] << sh) + ((uint64_t)C[l][lane][3] << (sh + 8));
        }
        if (want != got) { bad++; printf("lane %d row %d differ\n", l, row); }
    }
    printf("tc_layout_check (seed %llu): %s\n", (unsigned long long)seed,
           bad ? "MISMATCH" : "all 48 block sums equal");
    return bad != 0;
}
