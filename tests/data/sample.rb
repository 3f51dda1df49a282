# A community garden's plot allocation: real Ruby for the code splitter test.
require "date"

module Garden
  class AllocationError < StandardError; end

  class Plot
    attr_reader :number, :size_m2, :sunny
    attr_accessor :tenant, :since

    def initialize(number, size_m2, sunny: true)
      @number = number
      @size_m2 = size_m2
      @sunny = sunny
      @tenant = nil
      @since = nil
    end

    def free?
      tenant.nil?
    end

    def to_s
      state = free? ? "free" : "#{tenant} since #{since}"
      format("plot %<n>d (%<s>d m2, %<l>s): %<t>s", n: number, s: size_m2, l: sunny ? "sunny" : "shade", t: state)
    end
  end

  class WaitingList
    include Enumerable

    def initialize
      @entries = []
    end

    def add(name, wants_sun: false, on: Date.today)
      raise AllocationError, "#{name} is already waiting" if @entries.any? { |e| e[:name] == name }

      @entries << { name: name, wants_sun: wants_sun, on: on }
      self
    end

    def each(&block)
      @entries.sort_by { |e| e[:on] }.each(&block)
    end

    def remove(name)
      @entries.reject! { |e| e[:name] == name }
    end
  end

  class Allocator
    def initialize(plots, waiting_list)
      @plots = plots
      @waiting = waiting_list
    end

    def allocate(today = Date.today)
      assigned = []
      @waiting.to_a.each do |entry|
        plot = best_plot_for(entry)
        next unless plot

        plot.tenant = entry[:name]
        plot.since = today
        @waiting.remove(entry[:name])
        assigned << plot
      end
      assigned
    end

    def release(number)
      plot = @plots.find { |p| p.number == number }
      raise AllocationError, "no plot #{number}" unless plot

      plot.tenant = nil
      plot.since = nil
      plot
    end

    def occupancy
      taken = @plots.count { |p| !p.free? }
      (100.0 * taken / @plots.size).round(1)
    end

    private

    def best_plot_for(entry)
      free = @plots.select(&:free?)
      preferred = free.select(&:sunny) if entry[:wants_sun]
      (preferred.nil? || preferred.empty? ? free : preferred).max_by(&:size_m2)
    end
  end
end

if $PROGRAM_NAME == __FILE__
  plots = [Garden::Plot.new(1, 20), Garden::Plot.new(2, 35, sunny: false), Garden::Plot.new(3, 25)]
  list = Garden::WaitingList.new
  list.add("Okafor", wants_sun: true, on: Date.new(2024, 2, 1)).add("Lindqvist", on: Date.new(2024, 1, 15))
  allocator = Garden::Allocator.new(plots, list)
  allocator.allocate
  plots.each { |p| puts p }
  puts "occupancy: #{allocator.occupancy}%"
end
