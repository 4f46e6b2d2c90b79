//! Hand-made components for the sandbox's own tests: what the fixture plugins built
//! from Rust cannot express, such as a core module with two linear memories.

use wasm_encoder::{
    CodeSection, ComponentBuilder, ComponentExportKind, ExportKind, ExportSection, Function,
    FunctionSection, Instruction, MemorySection, MemoryType, Module, PrimitiveValType, TypeSection,
    ValType,
};

/// A component whose core module has two memories, both empty at first, and exports
/// `names[i]: func(pages: u32) -> s32`, which grows memory `i` by `pages` pages and
/// answers `memory.grow`'s result (the old size, or -1).
pub fn two_memories(names: [&str; 2]) -> Vec<u8> {
    let mut module = Module::new();
    let mut types = TypeSection::new();
    types.ty().function([ValType::I32], [ValType::I32]);
    module.section(&types);
    let mut funcs = FunctionSection::new();
    funcs.function(0);
    funcs.function(0);
    module.section(&funcs);
    let mut memories = MemorySection::new();
    for _ in 0..2 {
        memories.memory(MemoryType {
            minimum: 0,
            maximum: None,
            memory64: false,
            shared: false,
            page_size_log2: None,
        });
    }
    module.section(&memories);
    let mut exports = ExportSection::new();
    exports.export("grow0", ExportKind::Func, 0);
    exports.export("grow1", ExportKind::Func, 1);
    module.section(&exports);
    let mut code = CodeSection::new();
    for memory in 0..2 {
        let mut f = Function::new([]);
        f.instruction(&Instruction::LocalGet(0))
            .instruction(&Instruction::MemoryGrow(memory))
            .instruction(&Instruction::End);
        code.function(&f);
    }
    module.section(&code);

    let mut c = ComponentBuilder::default();
    let m = c.core_module(None, &module);
    let instance = c.core_instantiate(None, m, []);
    let (ty, mut f) = c.type_function(None);
    f.params([("pages", PrimitiveValType::U32)])
        .result(Some(PrimitiveValType::S32.into()));
    for (i, name) in names.into_iter().enumerate() {
        let core = c.core_alias_export(None, instance, &format!("grow{i}"), ExportKind::Func);
        let lifted = c.lift_func(None, core, ty, []);
        c.export(name, ComponentExportKind::Func, lifted, None);
    }
    c.finish()
}
