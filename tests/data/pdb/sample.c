/* Test input for pehp's PDB / CodeView / COFF readers (see build.py). */
struct inner {
    short a;
    char b;
};

struct ring {
    unsigned head;
    unsigned tail;
    int buf[16];
    struct ring *next;
    struct inner in;
    unsigned f1 : 3, f2 : 5;
    unsigned long long big;
    const char *label;
    double matrix[2][3];
};

union value {
    int i;
    float f;
    void *p;
};

enum color { RED, GREEN = 5, BLUE };

typedef int (*callback_t)(int, const char *);

int _fltused = 0; /* no CRT */
struct ring g_ring;
const char *g_name = "abc";
static int s_counter;
const int k_table[4] = {1, 2, 3, 4};
const char *const k_names[2] = {"x", "y"};
enum color g_color;
union value g_value;
callback_t g_callback;
volatile long g_volatile;

/* a section name longer than 8 bytes lives in the COFF string table */
#pragma section(".pehp$long_section_name", read)
__declspec(allocate(".pehp$long_section_name")) const int k_in_long_section = 42;

__declspec(noinline) static int helper(int x) { return x * 3 + s_counter; }

static inline int add7(int y) { return y + 7; }

__declspec(dllexport) int telemetry_push(struct ring *r, unsigned int v)
{
    r->buf[r->head++ & 15] = (int)v;
    s_counter++;
    return add7(helper((int)v));
}

__declspec(dllexport) int __stdcall std_fn(int a, const char *s) { return a + s[0] + g_color; }

__declspec(dllexport) int __fastcall fast_fn(int a, int b) { return a - b; }

__declspec(dllexport) int var_fn(const char *fmt, ...) { return fmt[0]; }

__declspec(dllexport) void (*get_fp(void))(int) { return 0; }

__declspec(dllexport) int patched(int a)
{
    static int local_static;
    local_static += a;
    return local_static + (int)g_ring.tail + k_table[a & 3];
}

__declspec(dllexport) int use_all(union value *v, enum color c, callback_t cb)
{
    return v->i + (int)c + (cb ? cb(1, g_name) : 0) + (int)g_volatile + k_names[c & 1][0] +
           (&k_in_long_section)[c & 0];
}

__declspec(dllexport) void set_cb(callback_t cb)
{
    g_callback = cb;
    g_value.p = &g_ring;
}
