# Inline C++ shared by the compiled modules: big-endian word loads, the
# common-prefix length of two 256-bit ids, and partial selection of the k
# ids closest to a target. Kept in one place so _xor and _kbucket cannot drift.

from libc.stdint cimport uint64_t, uint32_t
from libcpp.vector cimport vector

cdef extern from *:
    """
    #include <cstdint>
    #include <cstring>
    #include <algorithm>
    #include <vector>

    static inline uint64_t yz_be64(const unsigned char *p) {
    #if defined(__GNUC__) || defined(__clang__)
        uint64_t v;
        std::memcpy(&v, p, 8);
    #  if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        v = __builtin_bswap64(v);
    #  endif
        return v;
    #else
        uint64_t v = 0;
        for (int i = 0; i < 8; ++i) v = (v << 8) | p[i];
        return v;
    #endif
    }

    static inline int yz_clz64(uint64_t v) {
    #if defined(__GNUC__) || defined(__clang__)
        return __builtin_clzll(v);
    #else
        int n = 0;
        while (!(v & 0x8000000000000000ULL)) { v <<= 1; ++n; }
        return n;
    #endif
    }

    /* Number of leading bits two 32-byte ids share (256 when equal). */
    static inline int yz_cpl(const unsigned char *a, const unsigned char *b) {
        for (int w = 0; w < 4; ++w) {
            uint64_t x = yz_be64(a + 8 * w) ^ yz_be64(b + 8 * w);
            if (x) return 64 * w + yz_clz64(x);
        }
        return 256;
    }

    struct YzDist {
        uint64_t d[4];   /* target XOR id, most significant word first */
        uint32_t idx;    /* position in the caller's sequence */
    };

    /* A function object, not a function pointer, so the sort inlines it. */
    struct YzDistLess {
        inline bool operator()(const YzDist &a, const YzDist &b) const {
            if (a.d[0] != b.d[0]) return a.d[0] < b.d[0];
            if (a.d[1] != b.d[1]) return a.d[1] < b.d[1];
            if (a.d[2] != b.d[2]) return a.d[2] < b.d[2];
            if (a.d[3] != b.d[3]) return a.d[3] < b.d[3];
            return a.idx < b.idx;  /* equal ids keep their input order */
        }
    };

    static inline void yz_dist_set(YzDist &e, const unsigned char *t,
                                   const unsigned char *id, uint32_t idx) {
        for (int w = 0; w < 4; ++w) e.d[w] = yz_be64(t + 8 * w) ^ yz_be64(id + 8 * w);
        e.idx = idx;
    }

    /* Leave the k smallest entries, in ascending order, at the front. */
    static inline void yz_select_k(std::vector<YzDist> &v, size_t k) {
        if (k < v.size()) {
            std::nth_element(v.begin(), v.begin() + k, v.end(), YzDistLess());
            std::sort(v.begin(), v.begin() + k, YzDistLess());
        } else {
            std::sort(v.begin(), v.end(), YzDistLess());
        }
    }
    """
    int yz_cpl(const unsigned char *a, const unsigned char *b) noexcept nogil
    cdef cppclass YzDist:
        uint32_t idx
    void yz_dist_set(YzDist &e, const unsigned char *t, const unsigned char *id, uint32_t idx) noexcept nogil
    void yz_select_k(vector[YzDist] &v, size_t k) noexcept nogil
