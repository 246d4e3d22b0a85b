// Test input for pehp's PDB / CodeView readers: C++ classes, methods, references.
extern "C" int _fltused = 0;
void operator delete(void *, unsigned long long) {}
void operator delete(void *, unsigned int) {}
void operator delete(void *) {}

namespace ns {
struct Base {
    virtual ~Base();
    virtual int get() const;
    int b = 1;
};

struct Derived : Base {
    int get() const override;
    int extra(int &r, int &&m);
    double d = 0;
    static int count;
};

Base::~Base() {}
int Base::get() const { return b; }
int Derived::get() const { return b + 1; }
int Derived::extra(int &r, int &&m) { return r + m + (int)d + count; }
int Derived::count;

int free_fn(const Derived &d) { return d.get(); }
}  // namespace ns

extern "C" __declspec(dllexport) int entry(int x)
{
    ns::Derived d;
    int y = x;
    return ns::free_fn(d) + d.extra(y, 3);
}
