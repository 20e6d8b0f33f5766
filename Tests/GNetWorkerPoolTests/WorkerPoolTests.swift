import GNet
import GNetConformance
import GNetLocks
import GNetWorkerPool
import Glibc
import TestSupport
import Testing

@Suite(.serialized)
struct WorkerPoolTests {
    @Test func startsNamedThreadsAndLeavesNoneAfterShutdown() {
        let pool = WorkerPool(threads: 3, name: "wp-names")
        #expect(threadsNamed("wp-names-") == 3)
        pool.shutdown()
        #expect(threadsNamed("wp-names") == 0)
        #expect(pool.isShutDown)
        pool.shutdown() // a second call is harmless
    }

    @Test func fullQueueFailsAtOnce() throws {
        let pool = WorkerPool(threads: 1, queueCapacity: 2, name: "wp-full")
        let gate = Gate(), started = Counter(), ran = Counter()
        try holdWorker(pool, at: gate, started: started)
        try pool.submit { ran.add() }
        try pool.submit { ran.add() }
        #expect(pool.queuedCount == 2)
        #expect(throws: WorkerPoolError.queueFull(capacity: 2)) { try pool.submit { ran.add() } }
        gate.release()
        pool.shutdown(.finishQueued)
        #expect(ran.count == 2)
        #expect(threadsNamed("wp-full") == 0)
    }

    @Test func waitingModeWaitsForRoomOffTheLoops() throws {
        let pool = WorkerPool(threads: 1, queueCapacity: 1, whenFull: .wait, name: "wp-wait")
        let gate = Gate(), started = Counter(), ran = Counter(), returned = Counter()
        try holdWorker(pool, at: gate, started: started)
        try pool.submit { ran.add() }
        let waiter = TestThread.start {
            try? pool.submit { ran.add() }
            returned.add()
        }
        usleep(50_000)
        #expect(returned.count == 0, "a submit to a full queue in .wait mode returned without room")
        gate.release()
        waiter.join()
        #expect(returned.count == 1)
        pool.shutdown(.finishQueued)
        #expect(ran.count == 2)
    }

    @Test func waitingSubmitterFailsWhenThePoolShutsDown() throws {
        let pool = WorkerPool(threads: 1, queueCapacity: 1, whenFull: .wait, name: "wp-wait-stop")
        let gate = Gate(), started = Counter(), ran = Counter()
        try holdWorker(pool, at: gate, started: started)
        try pool.submit { ran.add() }
        let outcome = Locked<WorkerPoolError?>(nil)
        let waiter = TestThread.start {
            do throws(WorkerPoolError) { try pool.submit { ran.add() } } catch { outcome.withLock { $0 = error } }
        }
        usleep(20_000)
        let stopper = TestThread.start { pool.shutdown(.cancelQueued) }
        waiter.join()
        #expect(outcome.withLock { $0 } == .shutDown)
        gate.release()
        stopper.join()
        #expect(ran.count == 0)
        #expect(threadsNamed("wp-wait-stop") == 0)
    }

    @Test func submitAfterShutdownFails() async throws {
        let pool = WorkerPool(threads: 1, name: "wp-after")
        pool.shutdown()
        #expect(throws: WorkerPoolError.shutDown) { try pool.submit {} }
        await #expect(throws: WorkerPoolError.shutDown) { try await pool.run { 1 } }
    }

    @Test func runReturnsTheValueOrTheError() async throws {
        struct Lookup: Error, Equatable {}
        let pool = WorkerPool(threads: 2, name: "wp-run")
        #expect(try await pool.run { 6 * 7 } == 42)
        await #expect(throws: Lookup()) { try await pool.run { () throws -> Int in throw Lookup() } }
        pool.shutdown()
    }

    @Test func jobsStartInOrderPerSubmitter() throws {
        let pool = WorkerPool(threads: 1, queueCapacity: 10_000, name: "wp-fifo")
        let order = Locked<[[Int]]>(Array(repeating: [], count: 4))
        let submitters = (0 ..< 4).map { who in
            TestThread.start {
                for i in 0 ..< 500 { try! pool.submit { order.withLock { $0[who].append(i) } } }
            }
        }
        for t in submitters { t.join() }
        pool.shutdown(.finishQueued)
        for who in 0 ..< 4 { #expect(order.withLock { $0[who] } == Array(0 ..< 500), "submitter \(who) out of order") }
    }

    @Test(arguments: [WorkerPool.ShutdownMode.finishQueued, .cancelQueued])
    func shutdownFinishesOrCancelsQueuedWork(mode: WorkerPool.ShutdownMode) async throws {
        let pool = WorkerPool(threads: 1, queueCapacity: 8, name: "wp-stop")
        let gate = Gate(), started = Counter(), ran = Counter()
        try holdWorker(pool, at: gate, started: started)
        for _ in 0 ..< 3 { try pool.submit { ran.add() } }
        let values = Locked<[Result<Int, WorkerPoolError>]>([])
        let tasks = (0 ..< 2).map { i in
            Task {
                do {
                    let v = try await pool.run { ran.add(); return i }
                    values.withLock { $0.append(.success(v)) }
                }
                catch let e as WorkerPoolError { values.withLock { $0.append(.failure(e)) } }
            }
        }
        #expect(waitUntil { pool.queuedCount == 5 })
        let stopper = TestThread.start { pool.shutdown(mode) }
        #expect(waitUntil { pool.isShutDown })
        gate.release()
        stopper.join()
        for t in tasks { _ = try? await t.value }
        let failures = values.withLock { $0 }.filter { if case .failure = $0 { true } else { false } }
        switch mode {
        case .finishQueued:
            #expect(ran.count == 5)
            #expect(failures.isEmpty)
        case .cancelQueued:
            #expect(ran.count == 0)
            #expect(failures.count == 2)
            #expect(failures.allSatisfy { $0 == .failure(.shutDown) })
        }
        #expect(threadsNamed("wp-stop") == 0)
    }

    @Test(arguments: [WorkerPool.WhenFull.wait, .fail])
    func tenThousandSubmitsFromSeveralThreadsAllAccountedFor(whenFull: WorkerPool.WhenFull) {
        let pool = WorkerPool(threads: 4, queueCapacity: 64, whenFull: whenFull, name: "wp-load")
        let ran = Counter(), accepted = Counter(), rejected = Counter()
        let submitters = (0 ..< 8).map { _ in
            TestThread.start {
                for _ in 0 ..< 1_250 {
                    do throws(WorkerPoolError) {
                        try pool.submit { ran.add() }
                        accepted.add()
                    } catch {
                        if error == .queueFull(capacity: 64) { rejected.add() }
                    }
                }
            }
        }
        for t in submitters { t.join() }
        pool.shutdown(.finishQueued)
        #expect(accepted.count + rejected.count == 10_000)
        #expect(ran.count == accepted.count)
        if whenFull == .wait { #expect(ran.count == 10_000) }
        #expect(threadsNamed("wp-load") == 0)
    }
}
